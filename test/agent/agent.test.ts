// The executor's agent alone, against an in-process fake coordinator (test/support/fakeCoordinator.ts): a real
// Agent with the shell runtime running real /bin/sh steps, and a real HTTP server that speaks the executor protocol.
// No Docker, no database. The steps are steered through files ("gates") the test creates, so that every wait is
// for an event, not for time.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, onTestFailed } from 'vitest';
import {
  FakeCoordinator,
  startTestAgent,
  type FakeCoordinatorOptions,
  type TestAgent,
  type TestAgentOptions,
} from '../support/fakeCoordinator.js';

let fake: FakeCoordinator | undefined;
let agent: TestAgent | undefined;
let dir: string | undefined;

afterEach(async () => {
  await agent?.stop();
  await fake?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
  fake = agent = dir = undefined;
});

/** A fake coordinator, an agent registered with it, and a directory for the steps' gate and pid files. */
async function setup(fakeOptions: FakeCoordinatorOptions = {}, agentOptions: TestAgentOptions = {}) {
  dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-agent-steps-'));
  const f = (fake = await FakeCoordinator.start(fakeOptions));
  const a = (agent = await startTestAgent(f, agentOptions));
  onTestFailed(() => {
    console.log(`fake coordinator:\n${f.describe()}\nagent log:\n${a.logLines.join('\n')}`);
  });
  const files = dir;
  return {
    fake: f,
    agent: a,
    /** A path for a step to wait on or write to. */
    file: (name: string) => path.join(files, name),
    open: (name: string) => writeFile(path.join(files, name), ''),
  };
}

/** Shell lines for a step: `emit N` prints the next N numbered lines ("line 1", "line 2", …). */
const EMIT = 'i=0; emit() { n=$1; while [ "$n" -gt 0 ]; do i=$((i+1)); echo "line $i"; n=$((n-1)); done; }';
const waitFor = (variable: string) => `while [ ! -e "$${variable}" ]; do sleep 0.01; done`;

const numbered = (from: number, to: number): string[] =>
  Array.from({ length: to - from + 1 }, (_, k) => `line ${from + k}`);

/** The pid a step wrote to `file` (its shell is its process group's leader), once it has. */
function pidIn(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, 'utf8').trim());
  return pid > 0 ? pid : undefined;
}

/**
 * Whether any process of the group led by `pid` still runs. Read from /proc rather than asked with kill(-pid, 0),
 * which also counts zombies: a step's orphaned children, once killed, wait there until init gets round to them.
 */
function groupAlive(pid: number): boolean {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    // "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses, so read after its last ')'.
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pid && state !== 'Z' && state !== 'X') return true;
  }
  return false;
}

describe('agent against a fake coordinator', () => {
  it('runs a job: its log arrives, then its completion', async () => {
    const { fake } = await setup();
    const job = fake.enqueue({
      steps: [
        { key: 'hello', run: 'echo hello\necho "to stderr" >&2' },
        { key: 'count', run: `${EMIT}\nemit 3` },
      ],
    });
    const report = await fake.until(() => fake.report(job.id));
    expect(report).toMatchObject({ attempt: 1, kind: 'complete', status: 200, state: 'completed' });
    const [hello, count] = fake.entries(job.id);
    expect(hello).toMatchObject({ index: 0, key: 'step.hello', exitCode: 0 });
    expect(hello.command).toEqual(['/bin/sh', '-e', expect.stringMatching(/step-1\.sh$/)]);
    // stdout and stderr are read from separate pipes: their relative order is not defined.
    expect(hello.text.split('\n').sort()).toEqual(['', 'stderr: to stderr', 'stdout: hello']);
    expect(count).toMatchObject({
      index: 1,
      key: 'step.count',
      exitCode: 0,
      text: 'stdout: line 1\nstdout: line 2\nstdout: line 3\n',
    });
    // Logs first, then the report, all through the batch route this server has.
    const calls = fake.callsFor(job.id, 1);
    expect(calls.at(-1)).toMatchObject({ route: 'report', status: 200 });
    expect(calls.slice(0, -1).every((c) => c.route === 'logs' && c.status === 200)).toBe(true);
    expect(calls.every((c) => c.via === 'batch')).toBe(true);
    expect(fake.requests.logs + fake.requests.complete).toBe(0);
    expect(fake.protocolErrors).toEqual([]);
  });

  it('reports a failing step as fail with its message, and runs no later step', async () => {
    const { fake } = await setup();
    const job = fake.enqueue({
      steps: [
        { key: 'broken', run: 'echo "about to fail"\nexit 3' },
        { key: 'never', run: 'echo never' },
      ],
    });
    const report = await fake.until(() => fake.report(job.id));
    expect(report).toMatchObject({
      kind: 'fail',
      message: 'step broken failed with exit code 3',
      reason: 'script_failure',
      canceled: false,
      state: 'failed',
    });
    expect(fake.entries(job.id).map((e) => [e.key, e.exitCode])).toEqual([['step.broken', 3]]);
    expect(fake.stdoutLines(job.id)).toEqual(['about to fail']);
    expect(fake.protocolErrors).toEqual([]);
  });

  it('drains: the running job finishes and is delivered, and no new job is taken once drain starts', async () => {
    const { fake, agent, file, open } = await setup({}, { maxJobs: 2 });
    const running = fake.enqueue({
      steps: [{ key: 'work', run: `echo started\n${waitFor('GATE')}\necho finished`, env: { GATE: file('gate') } }],
    });
    await fake.until(() => fake.stdoutLines(running.id).includes('started'));
    // The free slot keeps a dequeue waiting at the server.
    await fake.until(() => fake.heldDequeues === 1);
    const dequeuesBefore = fake.requests.dequeue;

    const drained = agent.agent.drain();
    // The agent gives up its waiting dequeue; only then can a new job not be handed out on it.
    await fake.until(() => fake.heldDequeues === 0);
    expect(fake.dequeues.at(-1)).toMatchObject({ outcome: 'closed', jobIds: [] });
    const later = fake.enqueue({ steps: [{ key: 'later', run: 'echo should not run' }] });
    await open('gate');
    await drained;

    // drain() returns once the running job's result is acknowledged.
    expect(fake.report(running.id)).toMatchObject({ kind: 'complete', state: 'completed' });
    expect(fake.stdoutLines(running.id)).toEqual(['started', 'finished']);
    expect(fake.job(later.id)).toMatchObject({ state: 'queued', attempt: 0 });
    expect(fake.requests.dequeue).toBe(dequeuesBefore);
    expect(fake.protocolErrors).toEqual([]);
  });

  // 'refuse': the port is closed (a server that is down); 'reset': every connection is cut as it is made (a network
  // fault). The job either ends while the server is away (its report waits) or goes on after it is back.
  it.each([
    { mode: 'refuse', endsWhileAway: false },
    { mode: 'refuse', endsWhileAway: true },
    { mode: 'reset', endsWhileAway: true },
  ] as const)(
    'buffers output while the server is away ($mode, job ends while away: $endsWhileAway)',
    async ({ mode, endsWhileAway }) => {
      const { fake, file, open } = await setup();
      const script = [
        'echo $$ > "$PIDFILE"',
        EMIT,
        'emit 20',
        waitFor('AWAY'),
        'emit 500', // while the server is away
        'touch "$PRINTED"',
        waitFor('BACK'),
        'emit 20',
      ].join('\n');
      const job = fake.enqueue({
        steps: [
          {
            key: 'lines',
            run: script,
            env: { PIDFILE: file('pid'), AWAY: file('away'), PRINTED: file('printed'), BACK: file('back') },
          },
        ],
      });
      await fake.until(() => fake.stdoutLines(job.id).length >= 20);
      await fake.goAway(mode);
      await open('away');
      await fake.until(() => existsSync(file('printed')));
      if (endsWhileAway) {
        await open('back');
        const pid = await fake.until(() => pidIn(file('pid')));
        await fake.until(() => !groupAlive(pid), { what: 'the step has ended' });
        // With the port open, the agent's attempts show: let it fail a few times after the job ended.
        if (mode === 'reset') {
          const cut = fake.resetConnections;
          await fake.until(() => fake.resetConnections >= cut + 3);
        }
        expect(fake.report(job.id)).toBeUndefined();
      }
      await fake.comeBack();
      if (!endsWhileAway) await open('back');

      const report = await fake.until(() => fake.report(job.id));
      expect(report).toMatchObject({ attempt: 1, kind: 'complete', state: 'completed' });
      // Every line exactly once, in order: the offsets made the catch-up exact.
      expect(fake.stdoutLines(job.id)).toEqual(numbered(1, 540));
      expect(fake.entries(job.id)).toMatchObject([{ key: 'step.lines', exitCode: 0 }]);
      expect(fake.job(job.id).attempt).toBe(1);
      expect(fake.protocolErrors).toEqual([]);
    },
  );

  it('abandons a reset attempt: stops its step, sends nothing more for it, and runs the new attempt', async () => {
    const { fake, file } = await setup();
    const script = [
      'if [ "$DOCKHAND_JOB_ATTEMPT" = 1 ]; then',
      '  echo $$ > "$PIDFILE"',
      // Deaf to SIGTERM: the agent must escalate, and the step outlives the moment the agent learns of the reset.
      "  trap '' TERM",
      `  ${EMIT}`,
      '  while :; do emit 1; sleep 0.02; done',
      'fi',
      'echo "attempt $DOCKHAND_JOB_ATTEMPT ran"',
    ].join('\n');
    const job = fake.enqueue({ steps: [{ key: 'work', run: script, env: { PIDFILE: file('pid') } }] });
    await fake.until(() => fake.stdoutLines(job.id, 1).length >= 5);
    const pid = await fake.until(() => pidIn(file('pid')));

    fake.resetAttempt(job.id);
    const resetSeq = fake.seq;
    // The attempt's processes are stopped, and the job runs again as attempt 2 on the same agent.
    await fake.until(() => !groupAlive(pid), { what: "attempt 1's step has been stopped" });
    expect(await fake.until(() => fake.report(job.id, 2))).toMatchObject({ kind: 'complete', state: 'completed' });
    expect(fake.stdoutLines(job.id, 2)).toEqual(['attempt 2 ran']);
    // Let a heartbeat go by after that: attempt 1 still has sent nothing more.
    const doneSeq = fake.seq;
    await fake.until(() => fake.heartbeats.some((h) => h.seq > doneSeq));

    // At most one call of attempt 1 can arrive after the reset: the one in flight when it happened (or sent before
    // the news reached the agent), refused with 409. Nothing after that, and no report at all.
    const late = fake.callsFor(job.id, 1).filter((c) => c.seq > resetSeq);
    expect(late.length).toBeLessThanOrEqual(1);
    expect(late.every((c) => c.status === 409 && c.route === 'logs')).toBe(true);
    expect(fake.reports.filter((r) => r.jobId === job.id && r.attempt === 1)).toEqual([]);
    expect(fake.attemptOf(job.id, 1).outcome).toBe('reset');
    // What attempt 1 did send is whole: numbered lines from the first, none missing.
    const lines = fake.stdoutLines(job.id, 1);
    expect(lines).toEqual(numbered(1, lines.length));
    expect(fake.protocolErrors).toEqual([]);
  });

  it('falls back to the single-job routes on a server without /jobs/batch, losing nothing when jobs finish together', async () => {
    // A long flush interval: no output leaves before the jobs end, so their first calls meet the missing route together.
    const { fake, file, open } = await setup({ batchRoute: false }, { maxJobs: 4, logFlushIntervalMs: 10_000 });
    const jobs = Array.from({ length: 4 }, () =>
      fake.enqueue({
        steps: [{ key: 'lines', run: `${EMIT}\n${waitFor('GATE')}\nemit 200`, env: { GATE: file('gate') } }],
      }),
    );
    await fake.until(() => fake.heartbeats.some((h) => h.jobs.length === 4), { what: 'the agent runs all four jobs' });
    await open('gate');

    for (const job of jobs) {
      expect(await fake.until(() => fake.report(job.id))).toMatchObject({
        attempt: 1,
        kind: 'complete',
        state: 'completed',
        via: 'single',
      });
      expect(fake.stdoutLines(job.id)).toEqual(numbered(1, 200));
      expect(fake.entries(job.id)).toMatchObject([{ key: 'step.lines', exitCode: 0 }]);
      const calls = fake.callsFor(job.id, 1);
      expect(calls.every((c) => c.via === 'single' && c.status === 200)).toBe(true);
      expect(calls.at(-1)?.route).toBe('report');
    }
    // At most two requests are out at a time; once one is answered 404 no more are sent.
    expect(fake.requests.batch).toBeGreaterThanOrEqual(1);
    expect(fake.requests.batch).toBeLessThanOrEqual(2);
    expect(fake.reports).toHaveLength(4);
    expect(fake.protocolErrors).toEqual([]);
  });

  it.each([
    { step: 'exits on SIGTERM', trap: '', exitCode: 143 },
    { step: 'ignores SIGTERM', trap: "trap '' TERM", exitCode: 137 },
  ])(
    'cancels through the held heartbeat: the step ($step) stops within 2 s and the job is reported canceled',
    async ({ trap, exitCode }) => {
      const { fake, file } = await setup();
      const script = ['echo $$ > "$PIDFILE"', trap, EMIT, 'while :; do emit 1; sleep 0.02; done'].join('\n');
      const job = fake.enqueue({ steps: [{ key: 'forever', run: script, env: { PIDFILE: file('pid') } }] });
      await fake.until(() => fake.stdoutLines(job.id).length >= 3);
      const pid = await fake.until(() => pidIn(file('pid')));

      const canceledAt = Date.now();
      const cancelSeq = fake.seq;
      fake.cancel(job.id);
      // The cancel reaches the agent in the heartbeat it is holding open (or, had none been waiting at that instant,
      // in the next one, answered at once).
      const told = await fake.until(() =>
        fake.heartbeats.find(
          (h) => h.answeredSeq !== undefined && h.answeredSeq > cancelSeq && h.jobs.some((j) => j.id === job.id),
        ),
      );
      expect(told.answer).toEqual({ knownIds: [job.id], cancelIds: [job.id] });
      expect(told.early || told.receivedAt >= canceledAt).toBe(true);

      const report = await fake.until(() => fake.report(job.id));
      expect(report).toMatchObject({
        kind: 'fail',
        canceled: true,
        message: 'canceled by a user',
        reason: 'canceled',
        state: 'canceled',
      });
      await fake.until(() => !groupAlive(pid), { what: 'the step has stopped' });
      const [entry] = fake.entries(job.id);
      expect(entry.exitCode).toBe(exitCode);
      // The agent and the fake share a clock: the step ended (its entry's start plus its duration) within 2 s of the
      // answer that told the agent to cancel.
      const stoppedAt = entry.startTime + entry.durationMs!;
      expect(stoppedAt - told.answeredAt!).toBeLessThan(2_000);
      const lines = fake.stdoutLines(job.id);
      expect(lines).toEqual(numbered(1, lines.length));
      expect(fake.protocolErrors).toEqual([]);
    },
  );

  it('reports a job stopped by a hard abort as a retryable error', async () => {
    const { fake, agent, file } = await setup();
    const job = fake.enqueue({
      steps: [
        {
          key: 'long',
          run: 'echo $$ > "$PIDFILE"\necho started\nwhile :; do sleep 0.02; done',
          env: { PIDFILE: file('pid') },
        },
      ],
    });
    await fake.until(() => fake.stdoutLines(job.id).includes('started'));
    const pid = await fake.until(() => pidIn(file('pid')));

    await agent.agent.abort(10_000);
    // abort() gives delivery its grace: the report is in when it returns.
    expect(fake.report(job.id)).toMatchObject({
      kind: 'error',
      message: 'the executor was shut down while the job was running',
      reason: 'executor_shutdown',
      state: 'queued',
    });
    await fake.until(() => !groupAlive(pid), { what: 'the step has stopped' });
    expect(fake.entries(job.id)).toMatchObject([{ key: 'step.long', exitCode: 143 }]);
    expect(fake.protocolErrors).toEqual([]);
  });

  it('takes jobs one at a time from a server that ignores maxJobs', async () => {
    const { fake } = await setup({ ignoreMaxJobs: true }, { maxJobs: 3 });
    const jobs = Array.from({ length: 3 }, (_, k) => fake.enqueue({ steps: [{ key: 'hi', run: `echo job ${k}` }] }));
    for (const [k, job] of jobs.entries()) {
      expect(await fake.until(() => fake.report(job.id))).toMatchObject({ kind: 'complete', state: 'completed' });
      expect(fake.stdoutLines(job.id)).toEqual([`job ${k}`]);
    }
    const answered = fake.dequeues.filter((d) => d.outcome === 'jobs');
    expect(answered.length).toBe(3);
    expect(answered.every((d) => d.jobIds.length === 1 && d.maxJobs !== undefined)).toBe(true);
    expect(fake.protocolErrors).toEqual([]);
  });
});
