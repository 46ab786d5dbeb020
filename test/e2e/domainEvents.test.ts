// Domain events as a subsystem sees them: every change a user or an executor makes over HTTP, and the reaper's,
// emits its typed event once, from the ledger, and nothing else does. On PostgreSQL, the events' wake-ups reach the
// other replica's waiters, while the events themselves stay on their replica.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DomainEvent } from '../../src/server/events/domainEvents.js';
import { PostgresStore } from '../../src/store/postgres/postgresStore.js';
import { inProcessServer, type InProcessServer } from '../support/inProcess.js';
import { createTestDatabase } from '../support/postgres.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN } from '../support/processes.js';
import { until } from '../support/wait.js';

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const executor = { authorization: `token-executor ${EXECUTORS_TOKEN}` };

/** An executor's and a user's calls, over the in-process server's HTTP API. */
function api(server: InProcessServer<any>) {
  const call = async (url: string, payload: object, headers: Record<string, string>) => {
    const res = await server.app.inject({ method: 'POST', url, headers, payload });
    return { status: res.statusCode, body: res.body ? res.json() : undefined };
  };
  return {
    submit: async (queue: string, extra: object = {}) =>
      (await call('/api/v1/jobs', { queue, namespace: 'global', steps: [{ run: 'true' }], ...extra }, admin)).body
        .job as { id: number },
    dequeue: async (queue: string) => {
      const { status, body } = await call(
        '/api/executor/v1/dequeue',
        { executorName: 'events-exec', version: '1', queues: [queue], waitMs: 0 },
        executor,
      );
      if (status !== 200) throw new Error(`nothing to dequeue from ${queue} (HTTP ${status})`);
      return body as { id: number; attempt: number; token: string };
    },
    heartbeat: (jobs: { id: number; attempt: number }[]) =>
      call(
        '/api/executor/v1/heartbeat',
        {
          executorName: 'events-exec',
          hostname: 'h',
          os: 'linux',
          arch: 'x64',
          version: '1',
          runtime: 'shell',
          queues: ['events'],
          jobs,
        },
        executor,
      ),
    append: (job: { id: number; token: string }) =>
      call(
        `/api/executor/v1/jobs/${job.id}/logs`,
        { entries: [{ index: 0, key: 'step', command: ['true'], startTime: 1, offset: 0, out: 'stdout: hi\n' }] },
        { authorization: `Bearer ${job.token}` },
      ),
    report: (job: { id: number; token: string }, kind: 'complete' | 'error' | 'fail', body: object = {}) =>
      call(`/api/executor/v1/jobs/${job.id}/${kind}`, body, { authorization: `Bearer ${job.token}` }),
    cancel: (id: number) => call(`/api/v1/jobs/${id}/cancel`, {}, admin),
    retry: (id: number) => call(`/api/v1/jobs/${id}/retry`, {}, admin),
  };
}

describe('domain events', () => {
  let server: InProcessServer;
  const seen: DomainEvent[] = [];
  beforeAll(async () => {
    server = await inProcessServer();
    server.coordinator.context.events.subscribe((event) => seen.push(event));
  });
  afterAll(async () => {
    await server.close();
  });
  /** The events about job `id`, in order, taken from the list. */
  const of = (id: number): DomainEvent[] => {
    const about = (e: DomainEvent) => 'jobId' in e && e.jobId === id;
    const mine = seen.filter(about);
    for (let i = seen.length - 1; i >= 0; i--) if (about(seen[i])) seen.splice(i, 1);
    return mine;
  };

  it("follow a job through its executor's calls, once each", async () => {
    const { submit, dequeue, append, report } = api(server);
    const { id } = await submit('events', { maxAttempts: 2 });
    const first = await dequeue('events');
    expect((await append(first)).status).toBe(200);
    expect((await report(first, 'error', { message: 'flaky', reason: 'system_failure' })).status).toBe(200);
    // The same report again changes nothing, and says nothing.
    expect((await report(first, 'error', { message: 'flaky', reason: 'system_failure' })).status).toBe(200);
    // A stale attempt's output is refused, and says nothing either.
    expect((await append(first)).status).toBe(409);
    const requeued = of(id);
    const availableAt = (requeued[3] as { availableAt: number }).availableAt;
    expect(requeued).toEqual([
      { type: 'job.submitted', jobId: id, queue: 'events', namespace: 'global' },
      { type: 'job.started', jobId: id, queue: 'events', attempt: 1, executorName: 'events-exec' },
      { type: 'job.output', jobId: id, attempt: 1 },
      { type: 'job.requeued', jobId: id, queue: 'events', attempt: 1, cause: 'error', availableAt },
    ]);
    expect(availableAt).toBeGreaterThan(Date.now());
  });

  it("follow a user's cancels and retries", async () => {
    const { submit, dequeue, report, cancel, retry } = api(server);
    const queued = await submit('cancels');
    expect((await cancel(queued.id)).status).toBe(200);
    expect(of(queued.id)).toEqual([
      { type: 'job.submitted', jobId: queued.id, queue: 'cancels', namespace: 'global' },
      {
        type: 'job.finished',
        jobId: queued.id,
        queue: 'cancels',
        attempt: 0,
        state: 'canceled',
        reason: 'canceled',
        cause: 'cancel',
      },
    ]);

    const { id } = await submit('cancels');
    const running = await dequeue('cancels');
    expect((await cancel(id)).status).toBe(200);
    expect((await report(running, 'fail', { message: 'stopped', reason: 'canceled', canceled: true })).status).toBe(
      200,
    );
    expect((await retry(id)).status).toBe(200);
    expect(of(id)).toEqual([
      { type: 'job.submitted', jobId: id, queue: 'cancels', namespace: 'global' },
      { type: 'job.started', jobId: id, queue: 'cancels', attempt: 1, executorName: 'events-exec' },
      { type: 'job.cancelRequested', jobId: id, queue: 'cancels', attempt: 1 },
      {
        type: 'job.finished',
        jobId: id,
        queue: 'cancels',
        attempt: 1,
        state: 'canceled',
        reason: 'canceled',
        cause: 'report',
      },
      expect.objectContaining({ type: 'job.requeued', jobId: id, queue: 'cancels', attempt: 1, cause: 'retry' }),
    ]);
  });

  it("follow the reaper's resets, and the heartbeat that registers an executor", async () => {
    const { submit, dequeue, report, heartbeat } = api(server);
    const { id } = await submit('reaped', { maxAttempts: 3 });
    const running = await dequeue('reaped');
    expect((await heartbeat([{ id, attempt: running.attempt }])).status).toBe(200);
    expect(seen.filter((e) => e.type === 'executor.seen')).toEqual([
      { type: 'executor.seen', name: 'events-exec', hostname: 'h', runningJobs: 1 },
    ]);
    // A sweep as the reaper runs it, that finds every heartbeat too old.
    await server.coordinator.context.ledger.resetStalled({
      now: Date.now() + 1,
      timeoutMs: 0,
      maxResets: 3,
      notBefore: 0,
    });
    // The reset attempt's report is refused, and says nothing.
    expect((await report(running, 'complete')).status).toBe(409);
    expect(of(id).slice(2)).toEqual([
      expect.objectContaining({ type: 'job.requeued', jobId: id, attempt: 1, cause: 'reset' }),
    ]);
  });
});

describe('domain events across replicas (PostgreSQL)', () => {
  let a: InProcessServer<PostgresStore>;
  let b: InProcessServer<PostgresStore>;
  let drop: () => Promise<void>;
  let url: string;
  const onB: DomainEvent[] = [];
  beforeAll(async () => {
    const db = await createTestDatabase('events');
    ({ url, drop } = db);
    a = await inProcessServer({ store: new PostgresStore(url), start: true });
    b = await inProcessServer({ store: new PostgresStore(url), start: true });
    b.coordinator.context.events.subscribe((event) => onB.push(event));
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await drop?.();
  });

  it("wake the other replica's waiters, and keep the events on their replica", async () => {
    // wait() is true only when a wake-up came: a replica's waits are capped (5 s) and then answer false.
    const wakeups = b.coordinator.context.wakeups;
    const woken = wakeups.watchQueues(['relayed']);
    await api(a).submit('relayed');
    expect(await woken.wait(60_000)).toBe(true);
    expect(onB).toEqual([]);
  });

  it('wake on the single wake-up of a replica from before batching', async () => {
    const woken = b.coordinator.context.wakeups.watchQueues(['wake-old']);
    await a.store.notify!(JSON.stringify({ origin: 'older-replica', event: { type: 'queue', queue: 'wake-old' } }));
    expect(await woken.wait(60_000)).toBe(true);
  });
});
