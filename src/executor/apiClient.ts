// The executor's side of the protocol (docs/protocol.md): thin, typed calls with timeouts. Retrying is the
// caller's decision, because what is safe to retry differs per call.
import {
  EXECUTOR_API_PREFIX, STALE_ATTEMPT, type AppendLogsResponse, type BatchRequest, type BatchResponse, type DequeueBatchResponse,
  type DequeueRequest, type DequeuedJob, type HeartbeatRequest, type HeartbeatResponse, type LogEntryUpdate,
} from '../core/protocol.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
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
  constructor(
    private readonly baseUrl: string,
    private readonly executorToken: string,
  ) {}

  private async call<T>(path: string, body: unknown, auth: string, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ status: number; data: T | undefined }> {
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? REQUEST_TIMEOUT_MS);
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${EXECUTOR_API_PREFIX}${path}`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout,
      });
    } catch (err) {
      if (opts.signal?.aborted) throw err;
      throw new NetworkError(`cannot reach ${this.baseUrl}: ${describeFetchError(err)}`);
    }
    const text = await res.text().catch(() => '');
    if (res.status >= 400) {
      let message = text;
      let code: string | undefined;
      try {
        const parsed = JSON.parse(text) as { error?: string; code?: string };
        message = parsed.error ?? text;
        code = parsed.code;
      } catch {
        // not JSON: keep the text
      }
      throw new ApiError(res.status, `${path}: HTTP ${res.status}: ${message.slice(0, 500)}`, code);
    }
    return { status: res.status, data: text ? (JSON.parse(text) as T) : undefined };
  }

  private get executorAuth(): string {
    return `token-executor ${this.executorToken}`;
  }

  /** Up to `request.maxJobs` jobs (none when none arrived within waitMs). */
  async dequeue(request: DequeueRequest & { maxJobs: number }, signal?: AbortSignal): Promise<DequeuedJob[]> {
    const { data } = await this.call<DequeuedJob | DequeueBatchResponse>('/dequeue', request, this.executorAuth, { signal, timeoutMs: (request.waitMs ?? 25_000) + REQUEST_TIMEOUT_MS });
    if (!data) return [];
    // A server from before batches ignores maxJobs and answers with one job.
    return 'jobs' in data ? data.jobs : [data];
  }

  async heartbeat(request: HeartbeatRequest, signal?: AbortSignal): Promise<HeartbeatResponse> {
    const { data } = await this.call<HeartbeatResponse>('/heartbeat', request, this.executorAuth, { signal, timeoutMs: (request.waitMs ?? 0) + REQUEST_TIMEOUT_MS });
    return data!;
  }

  async appendLogs(job: DequeuedJob, entries: LogEntryUpdate[]): Promise<AppendLogsResponse> {
    const { data } = await this.call<AppendLogsResponse>(`/jobs/${job.id}/logs`, { entries }, `Bearer ${job.token}`);
    return data!;
  }

  async finish(job: DequeuedJob, report: FinalReport): Promise<{ state: string }> {
    const body = report.kind === 'complete' ? {} : report.kind === 'error' ? { message: report.message } : { message: report.message, canceled: report.canceled ?? false };
    const { data } = await this.call<{ state: string }>(`/jobs/${job.id}/${report.kind}`, body, `Bearer ${job.token}`);
    return data!;
  }

  /** Several jobs' appends and reports in one request (see Outbox); a server from before it answers 404. */
  async batch(items: BatchRequest['items']): Promise<BatchResponse> {
    const { data } = await this.call<BatchResponse>('/jobs/batch', { items }, this.executorAuth);
    return data!;
  }
}

export type FinalReport =
  | { kind: 'complete' }
  | { kind: 'error'; message: string }
  | { kind: 'fail'; message: string; canceled?: boolean };

function describeFetchError(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'request timed out';
  return e.cause?.code ?? e.cause?.message ?? e.message;
}
