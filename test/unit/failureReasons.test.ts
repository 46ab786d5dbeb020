import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  FAILURE_REASONS,
  FAILURE_REASON_NAMES,
  failure,
  isFailureReason,
  isRetryable,
  reasonLabel,
  reasonOfUntypedReport,
  reasonSummary,
  settleReport,
} from '../../src/core/failureReasons.js';
import { issuesOf } from '../../src/core/jobSpec.js';
import { decideFinish, decideStalled } from '../../src/core/jobState.js';
import { batchRequest, errorRequest, failRequest } from '../../src/core/protocol.js';

const processing = {
  state: 'processing' as const,
  attempt: 1,
  numFailures: 0,
  maxAttempts: 3,
  cancelRequested: false,
  availableAt: 0,
};
const current = { attempt: 1, outcome: null };
const report = { now: 1_000, retryBackoffMs: 100 };

describe('failure reasons', () => {
  it('builds reports whose kind follows the table', () => {
    for (const reason of FAILURE_REASON_NAMES) {
      const built = failure(reason, 'm');
      expect(built.kind).toBe(reason === 'canceled' || !isRetryable(reason) ? 'fail' : 'error');
    }
    expect(failure('canceled', 'm')).toEqual({ kind: 'fail', reason: 'canceled', message: 'm', canceled: true });
  });

  it("lets a typed report's reason decide retry or fail, whatever route it came by", () => {
    expect(settleReport('error', 'script_failure', false)).toEqual({
      kind: 'fail',
      reason: 'script_failure',
      canceled: false,
    });
    expect(settleReport('fail', 'executor_shutdown', false)).toEqual({
      kind: 'error',
      reason: 'executor_shutdown',
      canceled: false,
    });
    expect(settleReport('fail', 'canceled', false)).toEqual({ kind: 'fail', reason: 'canceled', canceled: true });
    expect(settleReport('fail', 'script_failure', true)).toEqual({ kind: 'fail', reason: 'canceled', canceled: true });
  });

  it('gives an untyped report (an older executor) the reason it most likely meant, keeping its kind', () => {
    expect(settleReport('error', undefined, false)).toEqual({
      kind: 'error',
      reason: 'system_failure',
      canceled: false,
    });
    expect(settleReport('fail', undefined, false)).toEqual({ kind: 'fail', reason: 'script_failure', canceled: false });
    expect(settleReport('fail', undefined, true)).toEqual({ kind: 'fail', reason: 'canceled', canceled: true });
    expect(reasonOfUntypedReport('error', false)).toBe('system_failure');
  });

  it('labels reasons for people, known or not', () => {
    expect(reasonLabel('out_of_memory')).toBe('out of memory (out_of_memory)');
    expect(reasonSummary('out_of_memory')).toBe(FAILURE_REASONS.out_of_memory.summary);
    expect(reasonLabel('from_a_newer_server')).toBe('from a newer server (from_a_newer_server)');
    expect(reasonSummary('from_a_newer_server')).toBeUndefined();
    // Not fooled by what every object has.
    expect(isFailureReason('constructor')).toBe(false);
    expect(reasonSummary('toString')).toBeUndefined();
  });

  it('are documented in docs/api.md, each with whether it is retried', () => {
    const doc = readFileSync(new URL('../../docs/api.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `([a-z_]+)` \| (retried|fails|canceled) \|/gm)].map((m) => [m[1], m[2]]);
    expect(rows).toEqual(
      FAILURE_REASON_NAMES.map((name) => [
        name,
        name === 'canceled' ? 'canceled' : isRetryable(name) ? 'retried' : 'fails',
      ]),
    );
  });

  it('are listed in docs/job-spec.md where maxAttempts says which errors are retried', () => {
    const doc = readFileSync(new URL('../../docs/job-spec.md', import.meta.url), 'utf8');
    const row = doc.split('\n').find((line) => line.startsWith('| `maxAttempts` |'))!;
    const listed = /is retried \(([^)]*)\)/.exec(row)![1].match(/[a-z_]+/g);
    // executor_lost is retried too, but counts against the resets, which the row says apart.
    expect(listed).toEqual(FAILURE_REASON_NAMES.filter((name) => isRetryable(name) && name !== 'executor_lost'));
    expect(row).toContain('(`executor_lost`) are counted separately');
  });

  it('takes a reason it does not know as none (a newer executor), and refuses only what cannot be a reason name', () => {
    for (const schema of [errorRequest, failRequest]) {
      const unknown = schema.safeParse({ message: 'x', reason: 'out_of_patience' });
      expect(unknown.success).toBe(true);
      expect(unknown.data!.reason).toBeUndefined();
      expect(schema.safeParse({ message: 'x', reason: 'out_of_memory' }).data!.reason).toBe('out_of_memory');
      const malformed = schema.safeParse({ message: 'x', reason: 'OOM!' });
      expect(malformed.success).toBe(false);
      const [issue] = issuesOf(malformed.error!);
      expect(issue.field).toBe('reason');
      expect(issue.message).toBe('must be a failure reason name such as script_failure');
    }
    const batch = batchRequest.safeParse({
      items: [{ id: 1, token: 't', report: { kind: 'fail', message: 'x', reason: 'No Such' } }],
    });
    expect(issuesOf(batch.error!).map((i) => i.field)).toEqual(['items[0].report.reason']);
    expect(errorRequest.safeParse({ message: 'x' }).success).toBe(true);
  });
});

describe('decideFinish with reasons', () => {
  it('records the reason on a retried and on a failed job, none on a completed one', () => {
    expect(
      decideFinish(processing, current, { ...report, kind: 'error', message: 'm', reason: 'checkout_failure' }),
    ).toMatchObject({
      kind: 'apply',
      state: 'queued',
      attemptOutcome: 'errored',
      failureReason: 'checkout_failure',
      failureMessage: 'm',
    });
    expect(
      decideFinish({ ...processing, numFailures: 2 }, current, {
        ...report,
        kind: 'error',
        message: 'm',
        reason: 'checkout_failure',
      }),
    ).toMatchObject({ state: 'failed', failureReason: 'checkout_failure' });
    expect(
      decideFinish(processing, current, { ...report, kind: 'fail', message: 'm', reason: 'step_timeout' }),
    ).toMatchObject({ state: 'failed', attemptOutcome: 'failed', failureReason: 'step_timeout' });
    expect(decideFinish(processing, current, { ...report, kind: 'complete' })).toMatchObject({
      state: 'completed',
      failureReason: null,
    });
  });

  it('follows the reason over the route, and counts a repeat of either as a repeat', () => {
    const misrouted = { ...report, kind: 'error' as const, message: 'm', reason: 'script_failure' as const };
    expect(decideFinish(processing, current, misrouted)).toMatchObject({
      state: 'failed',
      attemptOutcome: 'failed',
      numFailures: 0,
    });
    expect(decideFinish(processing, { attempt: 1, outcome: 'failed' }, misrouted)).toEqual({ kind: 'repeat' });
  });

  it('gives canceled to whatever ends a job a user canceled', () => {
    const canceling = { ...processing, cancelRequested: true };
    for (const r of [
      { kind: 'complete' as const },
      { kind: 'error' as const, message: 'm', reason: 'runtime_unavailable' as const },
      { kind: 'fail' as const, message: 'm' },
    ]) {
      expect(decideFinish(canceling, current, { ...report, ...r })).toMatchObject({
        state: 'canceled',
        attemptOutcome: 'canceled',
        failureReason: 'canceled',
      });
    }
  });

  it('guesses the reason of an untyped report', () => {
    expect(decideFinish(processing, current, { ...report, kind: 'error', message: 'm' })).toMatchObject({
      state: 'queued',
      failureReason: 'system_failure',
    });
    expect(decideFinish(processing, current, { ...report, kind: 'fail', message: 'm' })).toMatchObject({
      state: 'failed',
      failureReason: 'script_failure',
    });
    expect(
      decideFinish(processing, current, { ...report, kind: 'fail', message: 'm', canceledByExecutor: true }),
    ).toMatchObject({ state: 'canceled', failureReason: 'canceled' });
  });
});

describe('decideStalled with reasons', () => {
  const sweep = { now: 100_000, timeoutMs: 60_000, maxResets: 2 };
  const stalled = { numResets: 0, cancelRequested: false, executorName: 'e', lastHeartbeatAt: 0 };
  it('marks the attempt executor_lost, and a job that gives up too', () => {
    expect(decideStalled(stalled, sweep)).toMatchObject({
      attemptReason: 'executor_lost',
      next: 'queued',
      failureReason: null,
    });
    expect(decideStalled({ ...stalled, numResets: 2 }, sweep)).toMatchObject({
      attemptReason: 'executor_lost',
      next: 'failed',
      failureReason: 'executor_lost',
    });
    expect(decideStalled({ ...stalled, cancelRequested: true }, sweep)).toMatchObject({
      attemptReason: 'executor_lost',
      next: 'canceled',
      failureReason: 'canceled',
    });
  });
});
