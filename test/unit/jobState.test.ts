import { describe, it, expect } from 'vitest';
import {
  JOB_STATES,
  canTransition,
  decideAfterError,
  decideAfterFail,
  decideAfterStall,
  isTerminal,
  retryBackoffMs,
  stallFailureMessage,
  type JobState,
} from '../../src/core/jobState.js';

describe('canTransition', () => {
  const allowed: Record<JobState, JobState[]> = {
    queued: ['processing', 'canceled'],
    processing: ['completed', 'queued', 'failed', 'canceled'],
    completed: ['queued'],
    failed: ['queued'],
    canceled: ['queued'],
  };

  for (const from of JOB_STATES) {
    for (const to of JOB_STATES) {
      const expected = allowed[from].includes(to);
      it(`${from} -> ${to} is ${expected ? 'allowed' : 'refused'}`, () => {
        expect(canTransition(from, to)).toBe(expected);
      });
    }
  }

  it('no state transitions to itself', () => {
    for (const s of JOB_STATES) expect(canTransition(s, s)).toBe(false);
  });

  it('terminal states are completed, failed and canceled', () => {
    expect(JOB_STATES.filter(isTerminal)).toEqual(['completed', 'failed', 'canceled']);
  });
});

describe('decideAfterError', () => {
  const base = 5000;

  it('a cancel request wins over a retry', () => {
    expect(decideAfterError({ numFailures: 0, maxAttempts: 3, cancelRequested: true }, base)).toEqual({
      state: 'canceled',
      numFailures: 0,
      backoffMs: 0,
    });
  });

  it('retries while attempts remain, counting the failure', () => {
    expect(decideAfterError({ numFailures: 0, maxAttempts: 3, cancelRequested: false }, base)).toEqual({
      state: 'queued',
      numFailures: 1,
      backoffMs: base,
    });
    expect(decideAfterError({ numFailures: 1, maxAttempts: 3, cancelRequested: false }, base)).toEqual({
      state: 'queued',
      numFailures: 2,
      backoffMs: 2 * base,
    });
  });

  it('fails when the attempts are used up', () => {
    expect(decideAfterError({ numFailures: 2, maxAttempts: 3, cancelRequested: false }, base)).toEqual({
      state: 'failed',
      numFailures: 3,
      backoffMs: 0,
    });
  });

  it('fails at once when only one attempt is allowed', () => {
    expect(decideAfterError({ numFailures: 0, maxAttempts: 1, cancelRequested: false }, base).state).toBe('failed');
  });

  it('gives exactly maxAttempts attempts', () => {
    for (let maxAttempts = 1; maxAttempts <= 10; maxAttempts++) {
      let job = { numFailures: 0, maxAttempts, cancelRequested: false };
      let attempts = 0;
      for (;;) {
        attempts++;
        const d = decideAfterError(job, base);
        if (d.state !== 'queued') break;
        job = { ...job, numFailures: d.numFailures };
      }
      expect(attempts).toBe(maxAttempts);
    }
  });
});

describe('retryBackoffMs', () => {
  it('doubles with each failure', () => {
    expect([1, 2, 3, 4, 5].map((n) => retryBackoffMs(n, 1000))).toEqual([1000, 2000, 4000, 8000, 16000]);
  });

  it('is capped at 60 times the base', () => {
    expect(retryBackoffMs(6, 1000)).toBe(32_000);
    expect(retryBackoffMs(7, 1000)).toBe(60_000);
    expect(retryBackoffMs(50, 5000)).toBe(300_000);
    expect(retryBackoffMs(10_000, 5000)).toBe(300_000);
  });

  it('never goes below the base', () => {
    expect(retryBackoffMs(0, 1000)).toBe(1000);
  });
});

describe('decideAfterFail', () => {
  it('fails unless canceled', () => {
    expect(decideAfterFail({ cancelRequested: false }, false)).toBe('failed');
  });

  it('is canceled when a user asked for it or the executor stopped it for a cancel', () => {
    expect(decideAfterFail({ cancelRequested: true }, false)).toBe('canceled');
    expect(decideAfterFail({ cancelRequested: false }, true)).toBe('canceled');
    expect(decideAfterFail({ cancelRequested: true }, true)).toBe('canceled');
  });
});

describe('decideAfterStall', () => {
  it('queues the job again while resets remain', () => {
    expect(decideAfterStall({ numResets: 0 }, 3)).toBe('queued');
    expect(decideAfterStall({ numResets: 2 }, 3)).toBe('queued');
  });

  it('fails the job once it has been reset maxResets times', () => {
    expect(decideAfterStall({ numResets: 3 }, 3)).toBe('failed');
    expect(decideAfterStall({ numResets: 0 }, 0)).toBe('failed');
  });
});

describe('stallFailureMessage', () => {
  it('mentions the count, the executor and the timeout', () => {
    const message = stallFailureMessage(3, 'exec-7', 90_000);
    expect(message).toMatch(/\b3 times\b/);
    expect(message).toContain('exec-7');
    expect(message).toContain('90s');
    expect(message).toMatch(/heartbeat/);
  });

  it('says "unknown" when no executor is known', () => {
    expect(stallFailureMessage(1, null, 5000)).toContain('last executor: unknown');
  });
});
