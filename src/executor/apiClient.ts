// The executor's side of the protocol (docs/protocol.md): thin, typed calls with timeouts. Retrying is the
// caller's decision, because what is safe to retry differs per call.
import http from 'node:http';
import https from 'node:https';
import {
  EXECUTOR_API_PREFIX,
  EXECUTOR_NAME_IN_USE,
  STALE_ATTEMPT,
  type AppendLogsResponse,
  type BatchRequest,
  type BatchResponse,
  type DequeueBatchResponse,
  type DequeueRequest,
  type DequeuedJob,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type LogEntryUpdate,
  type ReleaseRequest,
} from '../core/protocol.js';
import type { AttemptReport } from '../core/failureReasons.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
    /** The error answer's fields besides `error` and `code`. */
    readonly details: Record<string, unknown> = {},
    /** The server's own message, without the route and status. */
    readonly serverMessage = message,
  ) {
    super(message);
  }

  /** Another live executor process holds this executor's name: the server's message, the holder's window, when it may free. */
  get nameInUse(): { message: string; windowMs: number; retryAfterMs: number } | undefined {
    if (this.status !== 409 || this.code !== EXECUTOR_NAME_IN_USE) return undefined;
    const ms = (value: unknown): number =>
      typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
    return {
      message: this.serverMessage,
      windowMs: ms(this.details.windowMs),
      retryAfterMs: ms(this.details.retryAfterMs),
    };
  }

  /** The server says this attempt is over (reset, canceled, or finished elsewhere): stop, and stop reporting. */
  get attemptGone(): boolean {
    return this.code === STALE_ATTEMPT || this.status === 401 || this.status === 403 || this.status === 404;
  }

  /** Worth trying again later: the server or something in front of it is unwell. */
  get retryable(): boolean {
    return this.status >= 500 || this.status === 429 || this.status === 408;
  }
}

/** Could not reach the server at all (refused, reset, timed out). Always retryable. */
export class NetworkError extends Error {}

const REQUEST_TIMEOUT_MS = 30_000;

export class ExecutorApiClient {
  private readonly transport: typeof http | typeof https;
  /** Kept-alive connections: an executor calls the server many times a second when jobs are short. */
  private readonly agent: http.Agent;

  constructor(
    private readonly baseUrl: string,
    private readonly executorToken: string,
  ) {
    // node:http rather than fetch: a fraction of the CPU per call, which counts when calls are hundreds a second.
    this.transport = new URL(baseUrl).protocol === 'https:' ? https : http;
    this.agent = new this.transport.Agent({ keepAlive: true });
  }

  private async call<T>(
    path: string,
    body: unknown,
    auth: string,
    opts: { signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<{ status: number; data: T | undefined }> {
    let res: { status: number; text: string };
    try {
      res = await this.post(
        `${this.baseUrl}${EXECUTOR_API_PREFIX}${path}`,
        JSON.stringify(body),
        auth,
        opts.signal,
        opts.timeoutMs ?? REQUEST_TIMEOUT_MS,
      );
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new NetworkError(`cannot reach ${this.baseUrl}: ${describeRequestError(err)}`);
    }
    const { status, text } = res;
    if (status >= 400) {
      let message = text;
      let code: string | undefined;
      let details: Record<string, unknown> = {};
      try {
        const parsed = JSON.parse(text) as { error?: string; code?: string };
        message = parsed.error ?? text;
        code = parsed.code;
        if (typeof parsed === 'object') details = parsed;
      } catch {
        // not JSON: keep the text
      }
      throw new ApiError(
        status,
        `${path}: HTTP ${status}: ${message.slice(0, 500)}`,
        code,
        details,
        message.slice(0, 2000),
      );
    }
    return { status, data: text ? (JSON.parse(text) as T) : undefined };
  }

  /** One POST, its answer read whole; fails on `signal`, and after `timeoutMs` in all. */
  private post(
    url: string,
    payload: string,
    auth: string,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const req = this.transport.request(url, {
        method: 'POST',
        agent: this.agent,
        headers: {
          authorization: auth,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(payload),
        },
      });
      const timer = setTimeout(() => req.destroy(new RequestTimeout()), timeoutMs);
      const onAbort = (): void => void req.destroy(signal!.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      req.once('error', (err) => {
        done();
        reject(err);
      });
      req.once('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.once('end', () => {
          done();
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        // A connection lost in the middle of the answer fails the request, as fetch would.
        res.once('error', (err) => {
          done();
          reject(err);
        });
      });
      req.end(payload);
    });
  }

  private get executorAuth(): string {
    return `token-executor ${this.executorToken}`;
  }

  /** Up to `request.maxJobs` jobs (none when none arrived within waitMs). */
  async dequeue(request: DequeueRequest & { maxJobs: number }, signal?: AbortSignal): Promise<DequeuedJob[]> {
    const { data } = await this.call<DequeuedJob | DequeueBatchResponse>('/dequeue', request, this.executorAuth, {
      signal,
      timeoutMs: (request.waitMs ?? 25_000) + REQUEST_TIMEOUT_MS,
    });
    if (!data) return [];
    // A server from before batches ignores maxJobs and answers with one job.
    return 'jobs' in data ? data.jobs : [data];
  }

  async heartbeat(request: HeartbeatRequest, signal?: AbortSignal): Promise<HeartbeatResponse> {
    const { data } = await this.call<HeartbeatResponse>('/heartbeat', request, this.executorAuth, {
      signal,
      timeoutMs: (request.waitMs ?? 0) + REQUEST_TIMEOUT_MS,
    });
    return data!;
  }

  /** Gives up this process's executor name as it stops; `timeoutMs` is short, since nothing waits on the answer. */
  async release(request: ReleaseRequest, timeoutMs: number): Promise<void> {
    await this.call('/release', request, this.executorAuth, { timeoutMs });
  }

  async appendLogs(job: DequeuedJob, entries: LogEntryUpdate[]): Promise<AppendLogsResponse> {
    const { data } = await this.call<AppendLogsResponse>(`/jobs/${job.id}/logs`, { entries }, `Bearer ${job.token}`);
    return data!;
  }

  async finish(job: DequeuedJob, report: FinalReport): Promise<{ state: string }> {
    const body =
      report.kind === 'complete'
        ? {}
        : report.kind === 'error'
          ? { message: report.message, reason: report.reason }
          : { message: report.message, reason: report.reason, canceled: report.canceled ?? false };
    const { data } = await this.call<{ state: string }>(`/jobs/${job.id}/${report.kind}`, body, `Bearer ${job.token}`);
    return data!;
  }

  /** Several jobs' appends and reports in one request (see Outbox); a server from before it answers 404. */
  async batch(items: BatchRequest['items']): Promise<BatchResponse> {
    const { data } = await this.call<BatchResponse>('/jobs/batch', { items }, this.executorAuth);
    return data!;
  }
}

export type FinalReport = AttemptReport;

class RequestTimeout extends Error {
  constructor() {
    super('request timed out');
  }
}

function describeRequestError(err: unknown): string {
  const e = err as Error & { code?: string };
  if (e instanceof RequestTimeout) return e.message;
  return e.code ?? e.message;
}
