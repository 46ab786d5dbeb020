// Carries running jobs' small calls (log appends, final reports) to the server in `/jobs/batch` requests. At most
// MAX_IN_FLIGHT requests are out at a time, and whatever queued up meanwhile leaves together in the next one: under
// light load every call goes at once, alone; under heavy load one request carries hundreds of jobs' calls, so the
// server answers far fewer requests than there are jobs. Callers see the same answers and errors as the single-job
// calls, so their retry and fencing logic is the same either way.
import type {
  AppendLogsResponse,
  BatchItemResult,
  BatchRequest,
  DequeuedJob,
  LogEntryUpdate,
} from '../core/protocol.js';
import { MAX_BATCH_ITEMS } from '../core/protocol.js';
import { ApiError, type ExecutorApiClient, type FinalReport } from './apiClient.js';

type Item = BatchRequest['items'][number];
type Done = Extract<BatchItemResult, { status: 200 }>;

interface Queued {
  item: Item;
  chars: number;
  resolve(result: Done): void;
  reject(err: unknown): void;
  /** The same call on its single-job route, for a server that has no batch route. */
  alone(): Promise<Done>;
}

const MAX_IN_FLIGHT = 2;
/** Output characters in one batch; a single append bigger than this (a job with a lot of output) goes alone. */
const MAX_BATCH_CHARS = 256 * 1024;

export class Outbox {
  private readonly queue: Queued[] = [];
  private inFlight = 0;
  /** false once the server answered that it has no batch route (a server from before 0.3). */
  private batches = true;

  constructor(private readonly api: ExecutorApiClient) {}

  async appendLogs(job: DequeuedJob, entries: LogEntryUpdate[]): Promise<AppendLogsResponse> {
    let chars = 0;
    for (const e of entries) chars += e.out.length;
    if (!this.batches || chars > MAX_BATCH_CHARS) return this.api.appendLogs(job, entries);
    const done = await this.send({ id: job.id, token: job.token, logs: entries }, chars, async () => ({
      id: job.id,
      status: 200,
      ...(await this.api.appendLogs(job, entries)),
    }));
    return { entries: done.entries ?? [] };
  }

  async finish(job: DequeuedJob, report: FinalReport): Promise<{ state: string }> {
    if (!this.batches) return this.api.finish(job, report);
    const done = await this.send({ id: job.id, token: job.token, report }, 0, async () => ({
      id: job.id,
      status: 200,
      ...(await this.api.finish(job, report)),
    }));
    return { state: done.state ?? 'unknown' };
  }

  private send(item: Item, chars: number, alone: () => Promise<Done>): Promise<Done> {
    return new Promise<Done>((resolve, reject) => {
      this.queue.push({ item, chars, resolve, reject, alone });
      this.pump();
    });
  }

  private pump(): void {
    if (!this.batches) {
      // Queued before the server said it has no batch route: each on its single-job route.
      for (const q of this.queue.splice(0)) this.alone(q);
      return;
    }
    while (this.inFlight < MAX_IN_FLIGHT && this.queue.length > 0) {
      let chars = this.queue[0].chars;
      let count = 1;
      while (
        count < this.queue.length &&
        count < MAX_BATCH_ITEMS &&
        chars + this.queue[count].chars <= MAX_BATCH_CHARS
      ) {
        chars += this.queue[count].chars;
        count++;
      }
      const batch = this.queue.splice(0, count);
      this.inFlight++;
      void this.deliver(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private alone(q: Queued): void {
    q.alone().then(q.resolve, q.reject);
  }

  private async deliver(batch: Queued[]): Promise<void> {
    let answer: BatchItemResult[];
    try {
      answer = (await this.api.batch(batch.map((q) => q.item))).items;
    } catch (err) {
      // A server from before the batch route (this batch or another one in flight found out): each call alone.
      if (err instanceof ApiError && err.status === 404) {
        this.batches = false;
        for (const q of batch) this.alone(q);
        return;
      }
      for (const q of batch) q.reject(err);
      return;
    }
    batch.forEach((q, i) => {
      const result = answer[i];
      if (!result || result.id !== q.item.id)
        q.reject(new ApiError(502, `/jobs/batch: the answer does not match the request (item ${i})`));
      else if ('error' in result)
        q.reject(
          new ApiError(result.status, `/jobs/${result.id}: HTTP ${result.status}: ${result.error}`, result.code),
        );
      else q.resolve(result);
    });
  }
}
