// A fake coordinator for testing the executor's agent alone (Buildkite's fake_api_server_test.go is the pattern): a
// real HTTP server on 127.0.0.1 that speaks the executor protocol's real paths and bodies (docs/protocol.md),
// validates them with the schemas of src/core/protocol.ts, checks the executor token and the per-attempt job tokens,
// and applies the same offset rule and report state machine as the real server (executorRoutes.ts, the stores,
// core/jobState.ts). It keeps everything it received for assertions and is scriptable: enqueue, cancel, reset an
// attempt, go away and come back, play a server without the batch route. No database, no Docker.
//
// It deliberately leaves out what the agent never sees: scheduling fairness and queue weights (jobs go out first
// come, first served), secrets resolution, storage faults, the reaper's clock (attempts are reset on request).
import { loadRuntimeSettings } from '../../src/executor/runtimes/settings.js';
import { EventEmitter } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFileSync } from 'node:fs';
import pino, { type Logger } from 'pino';
import type { z } from 'zod';
import { parseJobSpec, issuesOf, type JobSpec, type JobSpecInput } from '../../src/core/jobSpec.js';
import {
  decideFinish,
  decideAfterStall,
  stallFailureMessage,
  type AttemptOutcome,
  type JobState,
} from '../../src/core/jobState.js';
import {
  EXECUTOR_API_PREFIX,
  STALE_ATTEMPT,
  appendLogsRequest,
  batchRequest,
  completeRequest,
  dequeueRequest,
  errorRequest,
  failRequest,
  heartbeatRequest,
  releaseRequest,
  type AppendLogsResponse,
  type BatchItemResult,
  type DequeuedJob,
  type HeartbeatResponse,
  type LogEntryUpdate,
} from '../../src/core/protocol.js';
import { JOB_TOKEN_PREFIX, newToken, tokensEqual } from '../../src/core/tokens.js';
import { Agent } from '../../src/executor/agent.js';
import type { ExecutorConfig } from '../../src/executor/config.js';
import { Redactor } from '../../src/executor/redactor.js';
import { ShellRuntime } from '../../src/executor/runtimes/shell/shellRuntime.js';

export const FAKE_EXECUTOR_TOKEN = 'fake-coordinator-executor-token-0123456789';

/** As the real server's routes (http.ts): 1 MiB, and 16 MiB for log appends and batches. */
const DEFAULT_BODY_LIMIT = 1024 * 1024;
const LARGE_BODY_LIMIT = 16 * 1024 * 1024;

export type RouteName =
  'dequeue' | 'heartbeat' | 'release' | 'logs' | 'complete' | 'error' | 'fail' | 'batch' | 'unknown';
type ReportKind = 'complete' | 'error' | 'fail';

export interface FakeCoordinatorOptions {
  executorToken?: string;
  /** false: `/jobs/batch` answers 404, as a server from before the batch route does. */
  batchRoute?: boolean;
  /** true: `maxJobs` is ignored and a dequeue answers one job, as a server from before batched dequeues does. */
  ignoreMaxJobs?: boolean;
  /** Base of the backoff after an `error` report (DOCKHAND_RETRY_BACKOFF); short, so a retried job comes back soon. */
  retryBackoffMs?: number;
  /** DOCKHAND_MAX_JOB_RESETS, for resetAttempt. */
  maxJobResets?: number;
}

export interface FakeJob {
  id: number;
  queue: string;
  namespace: string;
  spec: JobSpec;
  secrets?: Record<string, string>;
  state: JobState;
  /** The current attempt's number (0 before the first dequeue). */
  attempt: number;
  executorName?: string;
  cancelRequested: boolean;
  numFailures: number;
  numResets: number;
  availableAt: number;
  lastHeartbeatAt?: number;
  failureMessage: string | null;
}

export interface FakeAttempt {
  jobId: number;
  attempt: number;
  token: string;
  executorName: string;
  startedAt: number;
  outcome: AttemptOutcome | null;
  message: string | null;
}

export interface StoredEntry {
  index: number;
  key: string;
  command: string[];
  startTime: number;
  /** The stored output, as the real server keeps it ("stdout: …\n" lines). */
  text: string;
  exitCode?: number;
  durationMs?: number;
}

/** One authenticated job-token call (a single-job route, or one item of a batch), with the attempt of its token. */
export interface JobCall {
  seq: number;
  at: number;
  jobId: number;
  attempt: number;
  route: 'logs' | 'report';
  via: 'single' | 'batch';
  status: number;
}

export interface ReceivedReport {
  seq: number;
  at: number;
  jobId: number;
  attempt: number;
  kind: ReportKind;
  message?: string;
  reason?: string;
  canceled?: boolean;
  via: 'single' | 'batch';
  /** What the fake answered: 200 (with the job's state) or 409. */
  status: number;
  state?: string;
  /** The report changed the job (the first one recorded for its attempt); false for a repeat or a refused one. */
  applied: boolean;
}

export interface ReceivedHeartbeat {
  seq: number;
  receivedAt: number;
  executorName: string;
  jobs: { id: number; attempt: number }[];
  waitMs: number;
  /** Set when the answer was written (not for a request the executor gave up on, or that went away with the server). */
  answeredAt?: number;
  answeredSeq?: number;
  answer?: HeartbeatResponse;
  /** Answered before `waitMs` because one of its jobs was canceled or reset. */
  early?: boolean;
}

export interface ReceivedDequeue {
  seq: number;
  receivedAt: number;
  maxJobs?: number;
  waitMs: number;
  /** 'jobs': answered with jobs; 'empty': 204; 'closed': the executor (or the fake going away) ended it first. */
  outcome?: 'jobs' | 'empty' | 'closed';
  jobIds: number[];
  endedAt?: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

function staleAttempt(jobId: number, attempt: number, state?: string): HttpError {
  // The real server's words (executorRoutes.ts), so the agent's messages read the same.
  return new HttpError(
    409,
    `attempt ${attempt} of job ${jobId} is no longer current${state ? ` (job is ${state})` : ''}; stop working on it`,
    {
      code: STALE_ATTEMPT,
    },
  );
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new HttpError(400, 'invalid request body', { issues: issuesOf(result.error) });
  return result.data;
}

/**
 * A port below the kernel's ephemeral range, so that while the fake is away no outgoing connection (the agent's own
 * included) can be bound to it and keep it from coming back on the same port.
 */
function candidatePort(): number {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual default
  }
  const floor = Math.min(20000, low - 1000);
  return floor + Math.floor(Math.random() * (low - floor));
}

export class FakeCoordinator {
  readonly executorToken: string;
  readonly options: Required<Omit<FakeCoordinatorOptions, 'executorToken'>>;
  readonly jobs = new Map<number, FakeJob>();
  readonly attempts: FakeAttempt[] = [];
  /** Requests that reached the fake, by route (counted on arrival, before authentication). */
  readonly requests: Record<RouteName, number> = {
    dequeue: 0,
    heartbeat: 0,
    release: 0,
    logs: 0,
    complete: 0,
    error: 0,
    fail: 0,
    batch: 0,
    unknown: 0,
  };
  readonly heartbeats: ReceivedHeartbeat[] = [];
  readonly dequeues: ReceivedDequeue[] = [];
  readonly reports: ReceivedReport[] = [];
  readonly jobCalls: JobCall[] = [];
  /** Requests answered with a status the agent should never cause (400, 401, 413, …): a test asserts it stays empty. */
  readonly protocolErrors: { route: RouteName; status: number; error: string }[] = [];
  /** Connections cut at once while away in 'reset' mode. */
  resetConnections = 0;
  /** Goes up with everything the fake records, so tests can order events. */
  seq = 0;

  private readonly server: http.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly logs = new Map<string, Map<number, StoredEntry>>();
  private readonly bus = new EventEmitter().setMaxListeners(0);
  private nextId = 1;
  private portNumber = 0;
  private away: 'refuse' | 'reset' | undefined;
  private closed = false;

  private constructor(options: FakeCoordinatorOptions) {
    this.executorToken = options.executorToken ?? FAKE_EXECUTOR_TOKEN;
    this.options = {
      batchRoute: options.batchRoute ?? true,
      ignoreMaxJobs: options.ignoreMaxJobs ?? false,
      retryBackoffMs: options.retryBackoffMs ?? 100,
      maxJobResets: options.maxJobResets ?? 3,
    };
    // Held requests stay open as long as a real server holds them; idle sockets as long as its keep-alive.
    this.server = http.createServer(
      { keepAliveTimeout: 65_000, requestTimeout: 0 },
      (req, res) => void this.handle(req, res),
    );
    this.server.on('connection', (socket) => {
      if (this.away === 'reset') {
        this.resetConnections++;
        this.changed();
        socket.resetAndDestroy();
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  static async start(options: FakeCoordinatorOptions = {}): Promise<FakeCoordinator> {
    const fake = new FakeCoordinator(options);
    for (let tries = 0; ; tries++) {
      try {
        await fake.listen(candidatePort());
        return fake;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || tries > 50) throw err;
      }
    }
  }

  get port(): number {
    return this.portNumber;
  }

  get url(): string {
    return `http://127.0.0.1:${this.portNumber}`;
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      this.server.once('error', onError);
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', onError);
        this.portNumber = (this.server.address() as net.AddressInfo).port;
        resolve();
      });
    });
  }

  // ---- scripting ------------------------------------------------------------------------------------------------

  /** Submits a job (the spec as a client writes it; normalized as the server does). */
  enqueue(
    input: Omit<JobSpecInput, 'queue'> & { queue?: string },
    opts: { secrets?: Record<string, string> } = {},
  ): FakeJob {
    const parsed = parseJobSpec({ queue: 'default', ...input });
    if (!parsed.ok) throw new Error(`invalid job spec: ${JSON.stringify(parsed.issues)}`);
    // The server stores the spec with its namespace filled in (here always global: the fake has no users).
    const spec = { ...parsed.value, namespace: parsed.value.namespace ?? 'global' };
    const job: FakeJob = {
      id: this.nextId++,
      queue: spec.queue,
      namespace: spec.namespace,
      spec,
      secrets: opts.secrets,
      state: 'queued',
      attempt: 0,
      cancelRequested: false,
      numFailures: 0,
      numResets: 0,
      availableAt: Date.now(),
      failureMessage: null,
    };
    this.jobs.set(job.id, job);
    this.wakeQueue(job.queue);
    this.changed();
    return job;
  }

  job(id: number): FakeJob {
    const job = this.jobs.get(id);
    if (!job) throw new Error(`the fake has no job ${id}`);
    return job;
  }

  /** A user's cancel (JobService.cancel, store.jobs.requestCancel): a queued job ends at once, a processing one is asked to stop. */
  cancel(id: number): void {
    const job = this.job(id);
    if (job.state === 'queued') {
      Object.assign(job, { state: 'canceled', cancelRequested: true, failureMessage: 'canceled by a user' });
    } else if (job.state === 'processing') {
      job.cancelRequested = true;
    }
    this.bus.emit(`interrupt:${id}`);
    this.changed();
  }

  /**
   * What the reaper does to a silent executor's job (store.jobs.resetStalled): the current attempt ends as `reset`, and
   * the job is queued again at once (or canceled, or failed after too many resets). Its old token now gets 409.
   */
  resetAttempt(id: number): void {
    const job = this.job(id);
    if (job.state !== 'processing') throw new Error(`job ${id} is ${job.state}, not processing`);
    const attempt = this.attemptOf(id, job.attempt);
    const silentFor = Math.round((Date.now() - (job.lastHeartbeatAt ?? Date.now())) / 1000);
    Object.assign(attempt, {
      outcome: 'reset',
      message: `no heartbeat from executor ${job.executorName} for ${silentFor}s`,
    });
    const requeue = !job.cancelRequested && decideAfterStall(job, this.options.maxJobResets) === 'queued';
    if (job.cancelRequested) Object.assign(job, { state: 'canceled', failureMessage: 'canceled by a user' });
    else if (requeue) Object.assign(job, { state: 'queued', numResets: job.numResets + 1, availableAt: Date.now() });
    else
      Object.assign(job, {
        state: 'failed',
        failureMessage: stallFailureMessage(this.options.maxJobResets, job.executorName ?? null, 25_000),
      });
    this.bus.emit(`interrupt:${id}`);
    if (requeue) this.wakeQueue(job.queue);
    this.changed();
  }

  /**
   * The server becomes unreachable. 'refuse': the listening socket is closed (new connections are refused) and every
   * open connection is dropped, held requests included; comeBack() listens on the same port again. 'reset': the
   * port stays open but every connection is reset as soon as it is made.
   */
  async goAway(mode: 'refuse' | 'reset' = 'refuse'): Promise<void> {
    if (this.away) throw new Error('the fake is already away');
    this.away = mode;
    const closing = mode === 'refuse' ? new Promise<void>((resolve) => this.server.close(() => resolve())) : undefined;
    for (const socket of this.sockets) socket.resetAndDestroy();
    await closing;
    this.changed();
  }

  async comeBack(): Promise<void> {
    if (!this.away) throw new Error('the fake is not away');
    if (this.away === 'refuse') {
      // The port is below the ephemeral range, so only another listener could hold it: worth a few tries.
      for (let tries = 0; ; tries++) {
        try {
          await this.listen(this.portNumber);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || tries >= 20) throw err;
          await sleep(50);
        }
      }
    }
    this.away = undefined;
    this.changed();
  }

  // ---- what it received -----------------------------------------------------------------------------------------

  attemptOf(jobId: number, attempt: number): FakeAttempt {
    const found = this.attempts.find((a) => a.jobId === jobId && a.attempt === attempt);
    if (!found) throw new Error(`job ${jobId} has no attempt ${attempt}`);
    return found;
  }

  /** An attempt's log entries, by index (default: the job's current attempt). */
  entries(jobId: number, attempt = this.job(jobId).attempt): StoredEntry[] {
    return [...(this.logs.get(`${jobId}.${attempt}`)?.values() ?? [])].sort((a, b) => a.index - b.index);
  }

  /** An attempt's stored output, every entry in order. */
  output(jobId: number, attempt?: number): string {
    return this.entries(jobId, attempt)
      .map((e) => e.text)
      .join('');
  }

  /** The stdout lines of an attempt's step entries, without their "stdout: " prefix. */
  stdoutLines(jobId: number, attempt?: number): string[] {
    return this.entries(jobId, attempt)
      .filter((e) => e.key.startsWith('step.'))
      .flatMap((e) => e.text.split('\n'))
      .filter((line) => line.startsWith('stdout: '))
      .map((line) => line.slice('stdout: '.length));
  }

  /** The report that ended an attempt (default: the last one applied to the job, whichever its attempt). */
  report(jobId: number, attempt?: number): ReceivedReport | undefined {
    for (let i = this.reports.length - 1; i >= 0; i--) {
      const r = this.reports[i];
      if (r.jobId === jobId && r.applied && (attempt === undefined || r.attempt === attempt)) return r;
    }
    return undefined;
  }

  /** Job-token calls made for one attempt (single routes and batch items alike). */
  callsFor(jobId: number, attempt: number): JobCall[] {
    return this.jobCalls.filter((c) => c.jobId === jobId && c.attempt === attempt);
  }

  /** Held dequeues waiting right now. */
  get heldDequeues(): number {
    return this.dequeues.filter((d) => d.outcome === undefined).length;
  }

  /**
   * Waits until `check` gives something truthy and returns it. It is looked at again whenever the fake records
   * something, and every 20 ms for conditions outside it (files, processes).
   */
  async until<T>(check: () => T, opts: { timeoutMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
    const timeoutMs = opts.timeoutMs ?? 20_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check();
      if (value) return value as NonNullable<T>;
      if (Date.now() > deadline) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting until ${opts.what ?? check.toString()}\n${this.describe()}`,
        );
      }
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          this.bus.off('change', done);
          resolve();
        };
        const timer = setTimeout(done, 20);
        this.bus.on('change', done);
      });
    }
  }

  /** A summary for failure messages. */
  describe(): string {
    const jobs = [...this.jobs.values()].map(
      (j) => `job ${j.id}: ${j.state}, attempt ${j.attempt}${j.cancelRequested ? ', cancel requested' : ''}`,
    );
    return [
      `requests: ${JSON.stringify(this.requests)}`,
      ...jobs,
      `reports: ${JSON.stringify(this.reports.map(({ jobId, attempt, kind, status, applied, message }) => ({ jobId, attempt, kind, status, applied, message })))}`,
      `protocol errors: ${JSON.stringify(this.protocolErrors)}`,
    ].join('\n');
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.bus.emit('closing');
    for (const socket of this.sockets) socket.destroy();
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- the protocol ---------------------------------------------------------------------------------------------

  private changed(): void {
    this.seq++;
    this.bus.emit('change');
  }

  private wakeQueue(queue: string): void {
    this.bus.emit(`queue:${queue}`);
  }

  /** Resolves true on one of `events`, false after `ms` or when `signal` aborts. */
  private waitFor(events: string[], ms: number, signal: AbortSignal): Promise<boolean> {
    return new Promise((resolve) => {
      const finish = (woke: boolean): void => {
        clearTimeout(timer);
        for (const name of events) this.bus.off(name, onEvent);
        this.bus.off('closing', onTimeout);
        signal.removeEventListener('abort', onTimeout);
        resolve(woke);
      };
      const onEvent = (): void => finish(true);
      const onTimeout = (): void => finish(false);
      const timer = setTimeout(onTimeout, Math.max(0, ms));
      for (const name of events) this.bus.on(name, onEvent);
      this.bus.on('closing', onTimeout);
      signal.addEventListener('abort', onTimeout, { once: true });
    });
  }

  private routeOf(method: string, url: string): { route: RouteName; jobId?: string } {
    if (method !== 'POST' || !url.startsWith(EXECUTOR_API_PREFIX)) return { route: 'unknown' };
    const rest = url.slice(EXECUTOR_API_PREFIX.length);
    if (rest === '/dequeue') return { route: 'dequeue' };
    if (rest === '/heartbeat') return { route: 'heartbeat' };
    if (rest === '/release') return { route: 'release' };
    if (rest === '/jobs/batch') return { route: 'batch' };
    const match = /^\/jobs\/([^/]+)\/(logs|complete|error|fail)$/.exec(rest);
    if (match) return { route: match[2] as RouteName, jobId: match[1] };
    return { route: 'unknown' };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = (req.url ?? '').split('?')[0];
    const { route, jobId } = this.routeOf(req.method ?? '', url);
    this.requests[route]++;
    this.changed();
    // Aborts when the connection goes (the executor gave up, or the fake went away): held requests stop waiting.
    const gone = new AbortController();
    res.once('close', () => gone.abort());
    try {
      // A server from before the batch route answers it as any route it does not have.
      if (route === 'unknown' || (route === 'batch' && !this.options.batchRoute)) {
        req.resume();
        throw new HttpError(404, `no route ${req.method} ${url}`);
      }
      // Credentials first, as the real server checks them before it reads the body.
      const executorRoute = route === 'dequeue' || route === 'heartbeat' || route === 'release' || route === 'batch';
      const attempt = executorRoute ? this.executorAuth(req) : this.jobAuth(req, jobId!);
      const body = await this.readBody(
        req,
        route === 'logs' || route === 'batch' ? LARGE_BODY_LIMIT : DEFAULT_BODY_LIMIT,
      );
      let answer: unknown;
      switch (route) {
        case 'dequeue':
          answer = await this.dequeue(parse(dequeueRequest, body), gone.signal);
          break;
        case 'heartbeat':
          answer = await this.heartbeat(parse(heartbeatRequest, body), gone.signal);
          break;
        case 'batch':
          answer = this.batch(parse(batchRequest, body).items);
          break;
        case 'release':
          // The fake keeps no names (one executor per fake): a stopping executor's release is only counted.
          parse(releaseRequest, body);
          answer = {};
          break;
        case 'logs':
          answer = this.call(attempt!, 'logs', 'single', () =>
            this.appendLogs(attempt!, parse(appendLogsRequest, body).entries),
          );
          break;
        default: {
          const kind = route as ReportKind;
          const schema = kind === 'complete' ? completeRequest : kind === 'error' ? errorRequest : failRequest;
          const report = {
            kind,
            ...parse(schema as z.ZodType<{ message?: string; reason?: string; canceled?: boolean }>, body),
          };
          answer = this.call(attempt!, 'report', 'single', () => this.finish(attempt!, report, 'single'));
        }
      }
      if (answer === undefined) res.writeHead(204).end();
      else this.send(res, 200, answer);
    } catch (err) {
      // A body cut off by a lost connection: nobody is there to answer.
      if (gone.signal.aborted) return;
      const failure =
        err instanceof HttpError ? err : new HttpError(500, `the fake coordinator failed: ${(err as Error).stack}`);
      const expected =
        failure.status === 409 || (failure.status === 404 && route === 'batch' && !this.options.batchRoute);
      if (!expected) this.protocolErrors.push({ route, status: failure.status, error: failure.message });
      this.send(res, failure.status, { error: failure.message, ...failure.extra });
    }
  }

  private send(res: http.ServerResponse, status: number, body: unknown): void {
    if (res.destroyed) return;
    const text = JSON.stringify(body);
    res
      .writeHead(status, {
        'content-type': 'application/json; charset=utf-8',
        'content-length': Buffer.byteLength(text),
      })
      .end(text);
  }

  private readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > limit) {
        req.resume();
        return reject(new HttpError(413, `request body too large: at most ${limit} bytes`));
      }
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        chunks.push(chunk);
      });
      req.once('error', reject);
      req.once('close', () => {
        if (!req.complete) reject(new Error('the connection was lost before the body was read'));
      });
      req.once('end', () => {
        if (size > limit) return reject(new HttpError(413, `request body too large: at most ${limit} bytes`));
        const text = Buffer.concat(chunks).toString('utf8');
        if (!text) return resolve(undefined);
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new HttpError(400, 'the request body is not valid JSON'));
        }
      });
    });
  }

  /** http.ts authenticate(): `token-executor <token>`, the scheme case-insensitive, compared in constant time. */
  private executorAuth(req: http.IncomingMessage): undefined {
    const { scheme, credential } = this.authorization(req);
    const hint = "send 'Authorization: token-executor <DOCKHAND_EXECUTORS_ACCESS_TOKEN>'";
    if (!credential) throw new HttpError(401, `missing credentials: ${hint}`);
    if (scheme !== 'token-executor' || !tokensEqual(credential, this.executorToken))
      throw new HttpError(401, `invalid executor token: ${hint}`);
    return undefined;
  }

  /** A job route's `Bearer <job token>`: the attempt it belongs to, which must be one of job `jobId`. */
  private jobAuth(req: http.IncomingMessage, jobId: string): FakeAttempt {
    const { scheme, credential } = this.authorization(req);
    const hint = "send 'Authorization: Bearer <job token>' as received from dequeue";
    if (!credential) throw new HttpError(401, `missing credentials: ${hint}`);
    if (scheme !== 'bearer') throw new HttpError(401, `wrong authorization scheme: ${hint}`);
    return this.attemptOfToken(credential, jobId);
  }

  private attemptOfToken(token: string, jobId: string | number): FakeAttempt {
    const attempt = this.attempts.find((a) => a.token === token);
    if (!attempt)
      throw new HttpError(401, "invalid job token: send 'Authorization: Bearer <job token>' as received from dequeue");
    if (String(attempt.jobId) !== String(jobId))
      throw new HttpError(403, `this job token belongs to job ${attempt.jobId}, not job ${jobId}`);
    return attempt;
  }

  private authorization(req: http.IncomingMessage): { scheme: string; credential: string } {
    const header = req.headers.authorization ?? '';
    const space = header.indexOf(' ');
    return {
      scheme: space > 0 ? header.slice(0, space).toLowerCase() : '',
      credential: space > 0 ? header.slice(space + 1).trim() : '',
    };
  }

  /** Runs one job-token call and records it with its answer's status. */
  private call<T>(attempt: FakeAttempt, route: JobCall['route'], via: JobCall['via'], run: () => T): T {
    const record = (status: number): void => {
      this.jobCalls.push({
        seq: ++this.seq,
        at: Date.now(),
        jobId: attempt.jobId,
        attempt: attempt.attempt,
        route,
        via,
        status,
      });
      this.bus.emit('change');
    };
    try {
      const result = run();
      record(200);
      return result;
    } catch (err) {
      if (err instanceof HttpError) record(err.status);
      throw err;
    }
  }

  private async dequeue(
    body: z.output<typeof dequeueRequest>,
    gone: AbortSignal,
  ): Promise<DequeuedJob | { jobs: DequeuedJob[] } | undefined> {
    const record: ReceivedDequeue = {
      seq: ++this.seq,
      receivedAt: Date.now(),
      maxJobs: body.maxJobs,
      waitMs: body.waitMs,
      jobIds: [],
    };
    this.dequeues.push(record);
    this.bus.emit('change');
    const single = body.maxJobs === undefined || this.options.ignoreMaxJobs;
    const end = (outcome: ReceivedDequeue['outcome'], jobs: DequeuedJob[] = []): void => {
      Object.assign(record, { outcome, endedAt: Date.now(), jobIds: jobs.map((j) => j.id) });
      this.changed();
    };
    const deadline = Date.now() + body.waitMs;
    while (!gone.aborted) {
      const jobs = this.claim(body.executorName, body.queues, single ? 1 : body.maxJobs!);
      if (jobs.length) {
        end('jobs', jobs);
        return single ? jobs[0] : { jobs };
      }
      const now = Date.now();
      if (deadline <= now) break;
      const nextAt = Math.min(
        ...[...this.jobs.values()]
          .filter((j) => j.state === 'queued' && body.queues.includes(j.queue))
          .map((j) => j.availableAt),
      );
      await this.waitFor(
        body.queues.map((q) => `queue:${q}`),
        Math.min(deadline - now, Math.max(0, nextAt - now)),
        gone,
      );
      if (this.closed) break;
    }
    end(gone.aborted ? 'closed' : 'empty');
    return undefined;
  }

  /** store.jobs.dequeueMany, first come first served: each job claimed is a new attempt with a new token. */
  private claim(executorName: string, queues: string[], count: number): DequeuedJob[] {
    const now = Date.now();
    const ready = [...this.jobs.values()]
      .filter((j) => j.state === 'queued' && queues.includes(j.queue) && j.availableAt <= now)
      .sort((a, b) => a.availableAt - b.availableAt || a.id - b.id)
      .slice(0, count);
    return ready.map((job) => {
      const token = newToken(JOB_TOKEN_PREFIX);
      Object.assign(job, { state: 'processing', attempt: job.attempt + 1, executorName, lastHeartbeatAt: now });
      this.attempts.push({
        jobId: job.id,
        attempt: job.attempt,
        token,
        executorName,
        startedAt: now,
        outcome: null,
        message: null,
      });
      const { dockerAuthConfig: _omitted, ...spec } = job.spec;
      return {
        id: job.id,
        attempt: job.attempt,
        token,
        queue: job.queue,
        namespace: job.namespace,
        spec,
        ...(job.secrets && Object.keys(job.secrets).length ? { secrets: job.secrets } : {}),
      };
    });
  }

  private async heartbeat(body: z.output<typeof heartbeatRequest>, gone: AbortSignal): Promise<HeartbeatResponse> {
    const record: ReceivedHeartbeat = {
      seq: ++this.seq,
      receivedAt: Date.now(),
      executorName: body.executorName,
      jobs: body.jobs,
      waitMs: body.waitMs,
    };
    this.heartbeats.push(record);
    this.bus.emit('change');
    // store.heartbeat: a job is known when its named attempt is current, processing, and this executor's.
    const look = (): HeartbeatResponse => {
      const knownIds: number[] = [];
      const cancelIds: number[] = [];
      for (const ref of body.jobs) {
        const job = this.jobs.get(ref.id);
        if (!job || job.state !== 'processing' || job.attempt !== ref.attempt || job.executorName !== body.executorName)
          continue;
        job.lastHeartbeatAt = Date.now();
        knownIds.push(ref.id);
        if (job.cancelRequested) cancelIds.push(ref.id);
      }
      return { knownIds, cancelIds };
    };
    let answer = look();
    let early = false;
    if (body.waitMs > 0 && body.jobs.length > 0 && answer.cancelIds.length === 0) {
      // Held until one of the jobs is canceled or reset (log appends and reports do not end the wait).
      early = await this.waitFor(
        body.jobs.map((j) => `interrupt:${j.id}`),
        body.waitMs,
        gone,
      );
      if (early) answer = look();
    }
    if (!gone.aborted) Object.assign(record, { answeredAt: Date.now(), answeredSeq: ++this.seq, answer, early });
    this.bus.emit('change');
    return answer;
  }

  /** store.logs.appendLogsMany: the first append of an index creates the entry; output it already has is dropped. */
  private appendLogs(attempt: FakeAttempt, entries: LogEntryUpdate[]): AppendLogsResponse {
    const job = this.job(attempt.jobId);
    if (job.state !== 'processing' || job.attempt !== attempt.attempt)
      throw staleAttempt(attempt.jobId, attempt.attempt, job.state);
    const key = `${attempt.jobId}.${attempt.attempt}`;
    let log = this.logs.get(key);
    if (!log) this.logs.set(key, (log = new Map()));
    return {
      entries: entries.map((update) => {
        let entry = log.get(update.index);
        if (!entry) {
          entry = {
            index: update.index,
            key: update.key,
            command: update.command,
            startTime: update.startTime,
            text: '',
          };
          log.set(update.index, entry);
        }
        const length = entry.text.length;
        entry.text += update.offset >= length ? update.out : update.out.slice(length - update.offset);
        if (update.exitCode !== undefined) entry.exitCode = update.exitCode;
        if (update.durationMs !== undefined) entry.durationMs = update.durationMs;
        return { index: update.index, length: entry.text.length };
      }),
    };
  }

  /** store.finish with core/jobState's decideFinish, the rules every real store applies. */
  private finish(
    attempt: FakeAttempt,
    report: { kind: ReportKind; message?: string; reason?: string; canceled?: boolean },
    via: 'single' | 'batch',
  ): { state: string } {
    const job = this.job(attempt.jobId);
    const now = Date.now();
    const decision = decideFinish({ ...job, maxAttempts: job.spec.maxAttempts }, attempt, {
      kind: report.kind,
      message: report.message,
      canceledByExecutor: report.canceled,
      now,
      retryBackoffMs: this.options.retryBackoffMs,
    });
    const received: ReceivedReport = {
      seq: ++this.seq,
      at: now,
      jobId: job.id,
      attempt: attempt.attempt,
      kind: report.kind,
      message: report.message,
      reason: report.reason,
      canceled: report.canceled,
      via,
      status: decision.kind === 'stale' ? 409 : 200,
      applied: decision.kind === 'apply',
    };
    this.reports.push(received);
    this.bus.emit('change');
    if (decision.kind === 'stale') throw staleAttempt(job.id, attempt.attempt, job.state);
    if (decision.kind === 'apply') {
      Object.assign(job, {
        state: decision.state,
        numFailures: decision.numFailures,
        failureMessage: decision.failureMessage,
        availableAt: decision.availableAt,
      });
      Object.assign(attempt, { outcome: decision.attemptOutcome, message: report.message ?? null });
      if (job.state === 'queued') {
        // Wakes waiting dequeues when the backoff ends, as the real server's nextAvailableAt does.
        this.wakeQueue(job.queue);
        setTimeout(() => this.wakeQueue(job.queue), Math.max(0, job.availableAt - now)).unref();
      }
    }
    received.state = job.state;
    return { state: job.state };
  }

  /**
   * `/jobs/batch` (executorRoutes.ts): each item authorized by its own token and answered as its single calls would
   * be; items for different jobs have all their appends applied, then all their reports; two items for one job are
   * taken one after the other, in order.
   */
  private batch(items: z.output<typeof batchRequest>['items']): { items: BatchItemResult[] } {
    const ids = new Set(items.map((i) => i.id));
    if (ids.size !== items.length) return { items: items.flatMap((item) => this.batch([item]).items) };
    const results: BatchItemResult[] = items.map((item) => ({ id: item.id, status: 200 }));
    const refuse = (i: number, err: unknown): void => {
      if (!(err instanceof HttpError)) throw err;
      results[i] = {
        id: items[i].id,
        status: err.status,
        error: err.message,
        ...(err.extra.code ? { code: String(err.extra.code) } : {}),
      };
    };
    const attempts = items.map((item, i): FakeAttempt | undefined => {
      try {
        return this.attemptOfToken(item.token, item.id);
      } catch (err) {
        refuse(i, err);
        return undefined;
      }
    });
    items.forEach((item, i) => {
      if (!item.logs || !attempts[i]) return;
      try {
        results[i] = {
          ...results[i],
          ...this.call(attempts[i]!, 'logs', 'batch', () => this.appendLogs(attempts[i]!, item.logs!)),
        } as BatchItemResult;
      } catch (err) {
        refuse(i, err);
      }
    });
    items.forEach((item, i) => {
      // An item whose logs were refused does not get its report tried either.
      if (!item.report || !attempts[i] || results[i].status !== 200) return;
      try {
        results[i] = {
          ...results[i],
          ...this.call(attempts[i]!, 'report', 'batch', () => this.finish(attempts[i]!, item.report!, 'batch')),
        } as BatchItemResult;
      } catch (err) {
        refuse(i, err);
      }
    });
    return { items: results };
  }
}

// ---- the agent under test ---------------------------------------------------------------------------------------

export interface TestAgentOptions {
  name?: string;
  queues?: string[];
  maxJobs?: number;
  heartbeatIntervalMs?: number;
  logFlushIntervalMs?: number;
  maxLogSize?: number;
  maxRuntimePerJobMs?: number;
}

export interface TestAgent {
  agent: Agent;
  /** The agent's own log lines (pino JSON), for failure messages. */
  logLines: string[];
  /** Hard stop if still running, then removes its workspaces. Safe to call twice. */
  stop(): Promise<void>;
}

/**
 * The one place that builds an agent and its runtime for these tests: the executor's config and runtime interfaces
 * are being reworked, and only this function should need to follow. A real Agent with the real shell runtime,
 * talking to `fake` over HTTP.
 */
export async function startTestAgent(fake: FakeCoordinator, overrides: TestAgentOptions = {}): Promise<TestAgent> {
  const workspaceRoot = await mkdtemp(path.join(os.tmpdir(), 'dockhand-agent-test-'));
  const config: ExecutorConfig = {
    frontendUrl: fake.url,
    frontendPassword: fake.executorToken,
    queues: overrides.queues ?? ['default'],
    weights: {},
    name: overrides.name ?? 'agent-under-test',
    maxJobs: overrides.maxJobs ?? 1,
    maxRuntimePerJobMs: overrides.maxRuntimePerJobMs ?? 10 * 60_000,
    // Short, so that a test hears of the server again soon after it comes back; well inside the allowed 100 ms–20 s.
    heartbeatIntervalMs: overrides.heartbeatIntervalMs ?? 1_000,
    logFlushIntervalMs: overrides.logFlushIntervalMs ?? 50,
    maxLogSize: overrides.maxLogSize ?? 100 * 2 ** 20,
    runtime: loadRuntimeSettings({
      EXECUTOR_RUNTIME: 'shell',
      EXECUTOR_NAME: overrides.name ?? 'agent-under-test',
      EXECUTOR_WORKSPACE_ROOT: workspaceRoot,
    }),
  };
  const logLines: string[] = [];
  const log: Logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(line.trimEnd()) });
  // Its own log redactor: the default one is shared by everything in this process.
  const agent = new Agent(config, new ShellRuntime(config.runtime, log), log, new Redactor());
  await agent.start();
  let stopped = false;
  return {
    agent,
    logLines,
    async stop() {
      if (stopped) return;
      stopped = true;
      await agent.abort(2_000);
      await rm(workspaceRoot, { recursive: true, force: true });
    },
  };
}
