// The fake coordinator answers as the real server does: one scripted conversation in the executor protocol, played
// against both (the real server here is the fastify app on a SQLite store, in this process), must give the same
// statuses and bodies, job tokens aside. The agent tests are only worth what the fake is.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_API_PREFIX, EXECUTOR_API_PREFIX } from '../../src/core/protocol.js';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../../src/core/tokens.js';
import { createCoordinator } from '../../src/server/coordinator.js';
import { Wakeups, type Waiter } from '../../src/server/events/wakeups.js';
import { Keyring, generateKey } from '../../src/server/secrets/keyring.js';
import { Secrets } from '../../src/server/secrets/secrets.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';
import type { LogEntryRecord } from '../../src/store/store.js';
import { FakeCoordinator, FAKE_EXECUTOR_TOKEN } from '../support/fakeCoordinator.js';
import { until } from '../support/wait.js';

/** A stored log entry with its text instead of its length, so both coordinators' can be compared whole. */
type StoredLogEntry = Omit<LogEntryRecord, 'length'> & { text: string };

interface Backend {
  url: string;
  submit(steps: { key: string; run: string }[]): Promise<number>;
  cancel(id: number): Promise<void>;
  /** What the reaper does to a silent executor's jobs. */
  resetAll(): Promise<void>;
  /** Heartbeats held open right now. */
  heldHeartbeats(): number;
  /** An attempt's stored log entries with their output. */
  storedLog(jobId: number, attempt: number): Promise<StoredLogEntry[]>;
  close(): Promise<void>;
}

async function fakeBackend(): Promise<Backend> {
  const fake = await FakeCoordinator.start();
  return {
    url: fake.url,
    submit: async (steps) => fake.enqueue({ steps }).id,
    cancel: async (id) => fake.cancel(id),
    resetAll: async () => {
      for (const job of fake.jobs.values()) if (job.state === 'processing') fake.resetAttempt(job.id);
    },
    heldHeartbeats: () =>
      fake.heartbeats.filter((h) => h.answeredAt === undefined && h.waitMs > 0 && h.jobs.length > 0).length,
    storedLog: async (jobId, attempt) =>
      fake.entries(jobId, attempt).map(({ text, exitCode, durationMs, ...rest }) => ({
        ...rest,
        exitCode: exitCode ?? null,
        durationMs: durationMs ?? null,
        text,
      })),
    close: () => fake.close(),
  };
}

/** Counts the heartbeats waiting for a wake-up, so the script can wait until one is held. */
class CountingWakeups extends Wakeups {
  held = 0;

  override watchInterruptions(jobIds: number[]): Waiter {
    const waiter = super.watchInterruptions(jobIds);
    return {
      wait: async (timeoutMs, signal) => {
        this.held++;
        try {
          return await waiter.wait(timeoutMs, signal);
        } finally {
          this.held--;
        }
      },
      cancel: () => waiter.cancel(),
    };
  }
}

async function realBackend(): Promise<Backend> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-fake-contract-'));
  const store = new SqliteStore(path.join(dir, 'dockhand.db'));
  await store.migrate();
  const admin = (await store.accounts.createUser('admin', true, Date.now()))!;
  const adminToken = newToken(API_TOKEN_PREFIX);
  await store.accounts.createToken(admin.id, 'admin', hashToken(adminToken), Date.now());
  const log = pino({ level: 'silent' });
  const wakeups = new CountingWakeups();
  const config = {
    executorsAccessToken: FAKE_EXECUTOR_TOKEN,
    stalledJobTimeoutMs: 25_000,
    maxJobResets: 3,
    retryBackoffMs: 100,
  };
  const coordinator = createCoordinator({
    store,
    secrets: new Secrets(store.accounts, Keyring.load({ DOCKHAND_ENCRYPTION_KEY: generateKey() }, '')),
    config,
    log,
    wakeups,
  });
  const { app } = coordinator;
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const client = async (route: string, body: unknown): Promise<Record<string, any>> => {
    const res = await fetch(`${url}${CLIENT_API_PREFIX}${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`${route}: HTTP ${res.status}: ${await res.text()}`);
    return (await res.json()) as Record<string, any>;
  };
  return {
    url,
    submit: async (steps) => (await client('/jobs', { queue: 'default', namespace: 'global', steps })).job.id as number,
    cancel: async (id) => void (await client(`/jobs/${id}/cancel`, {})),
    resetAll: async () => {
      // A sweep as reaper.ts runs it (its events wake whom they concern), that finds every heartbeat too old.
      await coordinator.context.ledger.resetStalled({ now: Date.now() + 1, timeoutMs: 0, maxResets: 3, notBefore: 0 });
    },
    heldHeartbeats: () => wakeups.held,
    storedLog: async (jobId, attempt) => {
      const chunks = await store.logs.readLogChunks(jobId, attempt, 0, 10_000);
      return (await store.logs.listLogEntries(jobId, attempt)).map(({ length: _length, ...entry }) => ({
        ...entry,
        text: chunks
          .filter((c) => c.index === entry.index)
          .map((c) => c.data)
          .join(''),
      }));
    },
    close: async () => {
      await app.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

interface Answer {
  status: number;
  body: unknown;
}

/** A POST to the executor API; the body as parsed JSON (null for none), every job token replaced by a placeholder. */
async function post(base: string, route: string, body: unknown, auth?: string): Promise<Answer & { raw: any }> {
  const res = await fetch(`${base}${EXECUTOR_API_PREFIX}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  const raw = text ? JSON.parse(text) : null;
  return { status: res.status, raw, body: text ? JSON.parse(text.replace(/dhj_[0-9a-f]{48}/g, 'dhj_TOKEN')) : null };
}

const EXECUTOR = `token-executor ${FAKE_EXECUTOR_TOKEN}`;
const dequeue = (extra: Record<string, unknown> = {}) => ({
  executorName: 'contract-1',
  version: '0.0.0-test',
  queues: ['default'],
  waitMs: 0,
  ...extra,
});
const heartbeat = (jobs: { id: number; attempt: number }[], waitMs = 0, executorName = 'contract-1') => ({
  executorName,
  hostname: 'contract-host',
  os: 'linux',
  arch: 'x64',
  version: '0.0.0-test',
  runtime: 'shell',
  queues: ['default'],
  jobs,
  waitMs,
});
const entry = (offset: number, out: string, extra: Record<string, unknown> = {}) => ({
  index: 0,
  key: 'step.a',
  command: ['/bin/sh', '-e', 'step-1.sh'],
  startTime: 1_700_000_000_000,
  offset,
  out,
  ...extra,
});

/** The scripted conversation; returns what each call was answered, by label. */
async function converse(backend: Backend): Promise<Record<string, Answer>> {
  const url = backend.url;
  const transcript: Record<string, Answer> = {};
  const say = async (label: string, route: string, body: unknown, auth?: string) => {
    const answer = await post(url, route, body, auth);
    transcript[label] = { status: answer.status, body: answer.body };
    return answer.raw;
  };

  await say('dequeue: wrong executor token', '/dequeue', dequeue(), 'token-executor not-the-executor-token-at-all');
  await say('dequeue: job token instead', '/dequeue', dequeue(), 'Bearer dhj_0123');
  await say('dequeue: waitMs too long', '/dequeue', dequeue({ waitMs: 60_000 }), EXECUTOR);
  await say('dequeue: nothing queued', '/dequeue', dequeue(), EXECUTOR);

  const a = await backend.submit([{ key: 'a', run: 'echo a' }]);
  const b = await backend.submit([{ key: 'b', run: 'echo b' }]);
  const jobA = await say('dequeue: one job, without maxJobs', '/dequeue', dequeue(), EXECUTOR);
  const batchB = await say('dequeue: with maxJobs', '/dequeue', dequeue({ maxJobs: 5 }), EXECUTOR);
  const tokenA = `Bearer ${jobA.token}`;
  const jobB = batchB.jobs[0];
  const tokenB = `Bearer ${jobB.token}`;

  await say(
    'heartbeat: both known',
    '/heartbeat',
    heartbeat([
      { id: a, attempt: 1 },
      { id: b, attempt: 1 },
    ]),
    EXECUTOR,
  );
  await say('heartbeat: another executor', '/heartbeat', heartbeat([{ id: a, attempt: 1 }], 0, 'contract-2'), EXECUTOR);
  await say('heartbeat: a wrong attempt', '/heartbeat', heartbeat([{ id: a, attempt: 2 }]), EXECUTOR);
  await say('heartbeat: invalid', '/heartbeat', { ...heartbeat([]), waitMs: -1, executorName: '-bad' }, EXECUTOR);

  await say('logs: no credentials', `/jobs/${a}/logs`, { entries: [entry(0, 'x')] });
  await say('logs: executor token', `/jobs/${a}/logs`, { entries: [entry(0, 'x')] }, EXECUTOR);
  await say('logs: unknown job token', `/jobs/${a}/logs`, { entries: [entry(0, 'x')] }, 'Bearer dhj_nope');
  await say("logs: another job's token", `/jobs/${a}/logs`, { entries: [entry(0, 'x')] }, tokenB);
  await say('logs: no entries', `/jobs/${a}/logs`, { entries: [] }, tokenA);
  await say('logs: first append', `/jobs/${a}/logs`, { entries: [entry(0, 'abc')] }, tokenA);
  await say('logs: overlapping retry', `/jobs/${a}/logs`, { entries: [entry(1, 'bcdef')] }, tokenA);
  await say(
    'logs: a gap',
    `/jobs/${a}/logs`,
    { entries: [entry(10, 'g'), entry(0, 'second', { index: 1, key: 'step.b' })] },
    tokenA,
  );
  await say('logs: exit code', `/jobs/${a}/logs`, { entries: [entry(7, '', { exitCode: 0, durationMs: 5 })] }, tokenA);

  // A held heartbeat is answered as soon as one of its jobs is canceled.
  const held = post(url, '/heartbeat', heartbeat([{ id: a, attempt: 1 }], 20_000), EXECUTOR);
  await until('the heartbeat is held', () => backend.heldHeartbeats() === 1, 10_000, 5);
  await backend.cancel(a);
  const answered = await held;
  transcript['heartbeat: held, then a cancel'] = { status: answered.status, body: answered.body };
  await say(
    'heartbeat: a cancel is answered at once',
    '/heartbeat',
    heartbeat([{ id: a, attempt: 1 }], 20_000),
    EXECUTOR,
  );
  await say('logs: still accepted while canceling', `/jobs/${a}/logs`, { entries: [entry(7, 'h')] }, tokenA);
  await say('fail: invalid body', `/jobs/${a}/fail`, { message: 3 }, tokenA);
  await say(
    'fail: canceled',
    `/jobs/${a}/fail`,
    { message: 'canceled by a user', reason: 'canceled', canceled: true },
    tokenA,
  );
  await say(
    'fail: repeated',
    `/jobs/${a}/fail`,
    { message: 'canceled by a user', reason: 'canceled', canceled: true },
    tokenA,
  );
  await say('complete: after a cancel', `/jobs/${a}/complete`, {}, tokenA);
  await say('logs: after the report', `/jobs/${a}/logs`, { entries: [entry(8, 'i')] }, tokenA);

  // Two items for one job (taken in order), an unknown token, another job's token.
  await say(
    'batch: items for one job',
    '/jobs/batch',
    {
      items: [
        { id: b, token: jobB.token, logs: [entry(0, 'b1\n')] },
        {
          id: b,
          token: jobB.token,
          logs: [entry(0, 'b1\nb2\n', { exitCode: 0, durationMs: 1 })],
          report: { kind: 'complete' },
        },
        { id: b, token: 'dhj_unknown' },
        { id: b, token: jobA.token, report: { kind: 'complete' } },
      ],
    },
    EXECUTOR,
  );
  await say('batch: job token instead', '/jobs/batch', { items: [{ id: b, token: jobB.token }] }, tokenB);
  await say(
    'batch: invalid',
    '/jobs/batch',
    { items: [{ id: b, token: jobB.token, report: { kind: 'done' } }] },
    EXECUTOR,
  );
  await say('complete: repeated', `/jobs/${b}/complete`, {}, tokenB);
  await say('error: after complete', `/jobs/${b}/error`, { message: 'late', reason: 'system_failure' }, tokenB);

  // A reset, while no other job is processing (the sweep resets them all): the held heartbeat hears of it, the old
  // token is refused, and the next dequeue is attempt 2.
  const e = await backend.submit([{ key: 'e', run: 'echo e' }]);
  const jobE = await say('dequeue: job e', '/dequeue', dequeue(), EXECUTOR);
  const heldE = post(url, '/heartbeat', heartbeat([{ id: e, attempt: 1 }], 20_000), EXECUTOR);
  await until('the heartbeat is held', () => backend.heldHeartbeats() === 1, 10_000, 5);
  await backend.resetAll();
  const answeredE = await heldE;
  transcript['heartbeat: held, then a reset'] = { status: answeredE.status, body: answeredE.body };
  await say('logs: reset attempt', `/jobs/${e}/logs`, { entries: [entry(0, 'e')] }, `Bearer ${jobE.token}`);
  await say('complete: reset attempt', `/jobs/${e}/complete`, {}, `Bearer ${jobE.token}`);
  await say('dequeue: job e again', '/dequeue', dequeue({ maxJobs: 3, waitMs: 5_000 }), EXECUTOR);
  await say('logs: the old attempt still', `/jobs/${e}/logs`, { entries: [entry(0, 'e')] }, `Bearer ${jobE.token}`);
  await say(
    'heartbeat: the old attempt',
    '/heartbeat',
    heartbeat([
      { id: e, attempt: 1 },
      { id: e, attempt: 2 },
    ]),
    EXECUTOR,
  );

  // Items for different jobs: all appends, then all reports; a refused append keeps its item's report from being tried.
  const c = await backend.submit([{ key: 'c', run: 'echo c' }]);
  const d = await backend.submit([{ key: 'd', run: 'echo d' }]);
  const [jobC, jobD] = (await say('dequeue: two jobs', '/dequeue', dequeue({ maxJobs: 2 }), EXECUTOR)).jobs;
  await say(
    'batch: several jobs',
    '/jobs/batch',
    {
      items: [
        {
          id: c,
          token: jobC.token,
          logs: [entry(0, 'c\n', { exitCode: 1, durationMs: 2 })],
          report: { kind: 'fail', message: 'step c failed with exit code 1', reason: 'script_failure' },
        },
        {
          id: d,
          token: jobD.token,
          logs: [entry(0, 'd\n')],
          report: { kind: 'error', message: 'step d could not be started', reason: 'runtime_unavailable' },
        },
        { id: a, token: jobA.token, logs: [entry(9, 'j')], report: { kind: 'complete' } },
      ],
    },
    EXECUTOR,
  );

  // Job d's error was retried after its backoff: it comes back as attempt 2 (the wait covers the backoff, however long
  // the calls above took).
  await say('dequeue: job d after its backoff', '/dequeue', dequeue({ waitMs: 5_000 }), EXECUTOR);

  // What was stored of each attempt's log, through all of the above.
  for (const [job, attempt] of [
    [a, 1],
    [b, 1],
    [c, 1],
    [d, 1],
    [e, 1],
  ]) {
    transcript[`stored log of job ${job}, attempt ${attempt}`] = {
      status: 0,
      body: await backend.storedLog(job, attempt),
    };
  }
  return transcript;
}

describe('the fake coordinator', () => {
  const backends: Backend[] = [];
  beforeAll(async () => {
    backends.push(await realBackend(), await fakeBackend());
  });
  afterAll(async () => {
    for (const backend of backends) await backend.close();
  });

  it('answers a scripted executor conversation exactly as the real server does', async () => {
    const [real, fake] = backends;
    const expected = await converse(real);
    const actual = await converse(fake);
    expect(Object.keys(actual)).toEqual(Object.keys(expected));
    for (const label of Object.keys(expected))
      expect({ label, ...actual[label] }).toEqual({ label, ...expected[label] });
  });
});
