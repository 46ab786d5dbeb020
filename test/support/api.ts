// A small client for the HTTP APIs, for tests: the client API with the admin token, and raw executor calls.
import { setTimeout as sleep } from 'node:timers/promises';
import type { JobSpecInput } from '../../src/core/jobSpec.js';
import type { DequeuedJob } from '../../src/core/protocol.js';
import type { AttemptRecord, JobRecord } from '../../src/store/store.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN } from './processes.js';

export interface HttpAnswer<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export async function http<T = any>(
  url: string,
  method: string,
  auth: string | undefined,
  body?: unknown,
): Promise<HttpAnswer<T>> {
  const res = await fetch(url, {
    method,
    headers: {
      ...(auth ? { authorization: auth } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed as T, headers: res.headers };
}

export class TestClient {
  constructor(
    readonly url: string,
    readonly token = ADMIN_TOKEN,
  ) {}

  call<T = any>(method: string, route: string, body?: unknown): Promise<HttpAnswer<T>> {
    return http<T>(`${this.url}/api/v1${route}`, method, `Bearer ${this.token}`, body);
  }

  /** Creates a user (as a site admin) and returns a client with a fresh token of theirs. */
  async addUser(name: string, siteAdmin = false): Promise<TestClient> {
    const made = await this.call('POST', '/users', { name, siteAdmin });
    if (made.status !== 201) throw new Error(`create user ${name}: ${made.status} ${JSON.stringify(made.body)}`);
    const token = await this.call<{ secret: string }>('POST', '/tokens', { name: 'test', user: name });
    if (token.status !== 201) throw new Error(`token for ${name}: ${token.status} ${JSON.stringify(token.body)}`);
    return new TestClient(this.url, token.body.secret);
  }

  /** Creates an org with this client's user as its first member. */
  async addOrg(name: string): Promise<void> {
    const made = await this.call('POST', '/orgs', { name });
    if (made.status !== 201) throw new Error(`create org ${name}: ${made.status} ${JSON.stringify(made.body)}`);
  }

  /** Sets a secret (default namespace global). */
  async setSecret(name: string, value: string, namespace = 'global'): Promise<void> {
    const answer = await this.call('POST', '/secrets', { name, value, namespace });
    if (answer.status !== 201 && answer.status !== 200)
      throw new Error(`set secret ${name}: ${answer.status} ${JSON.stringify(answer.body)}`);
  }

  async submit(spec: JobSpecInput): Promise<JobRecord> {
    const answer = await this.call<{ job: JobRecord }>('POST', '/jobs', spec);
    if (answer.status !== 201) throw new Error(`submit failed: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body.job;
  }

  async job(id: number): Promise<{ job: JobRecord; attempts: AttemptRecord[] }> {
    const answer = await this.call('GET', `/jobs/${id}`);
    if (answer.status !== 200) throw new Error(`job ${id}: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  async logs(
    id: number,
    attempt?: number,
  ): Promise<{ attempt: number; entries: { key: string; exitCode: number | null; out: string }[] }> {
    return (await this.call('GET', `/jobs/${id}/logs${attempt ? `?attempt=${attempt}` : ''}`)).body;
  }

  /** Polls until the job satisfies `done` (e.g. reaches a state); fails with the job after `timeoutMs`. */
  async waitFor(id: number, done: (job: JobRecord) => boolean, timeoutMs = 30_000): Promise<JobRecord> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { job } = await this.job(id);
      if (done(job)) return job;
      if (Date.now() > deadline) throw new Error(`job ${id} did not get there in time: ${JSON.stringify(job)}`);
      await sleep(50);
    }
  }

  waitForState(id: number, state: string, timeoutMs?: number): Promise<JobRecord> {
    return this.waitFor(id, (j) => j.state === state, timeoutMs);
  }
}

/** Speaks the executor protocol directly, to play an executor the tests fully control. */
export class RawExecutor {
  constructor(
    readonly url: string,
    readonly name: string,
  ) {}

  dequeue(queues: string[], waitMs = 0): Promise<HttpAnswer<DequeuedJob>> {
    return http(`${this.url}/api/executor/v1/dequeue`, 'POST', `token-executor ${EXECUTORS_TOKEN}`, {
      executorName: this.name,
      version: 'test',
      queues,
      waitMs,
    });
  }

  heartbeat(
    jobs: { id: number; attempt: number }[],
    waitMs = 0,
  ): Promise<HttpAnswer<{ knownIds: number[]; cancelIds: number[] }>> {
    return http(`${this.url}/api/executor/v1/heartbeat`, 'POST', `token-executor ${EXECUTORS_TOKEN}`, {
      executorName: this.name,
      hostname: 'test',
      os: 'linux',
      arch: 'x64',
      version: 'test',
      runtime: 'none',
      queues: [],
      jobs,
      waitMs,
    });
  }

  jobCall(job: DequeuedJob, action: string, body: unknown): Promise<HttpAnswer> {
    return http(`${this.url}/api/executor/v1/jobs/${job.id}/${action}`, 'POST', `Bearer ${job.token}`, body);
  }

  appendLog(job: DequeuedJob, out: string, offset = 0): Promise<HttpAnswer> {
    return this.jobCall(job, 'logs', {
      entries: [{ index: 0, key: 'step.raw', command: ['raw'], startTime: Date.now(), offset, out }],
    });
  }
}
