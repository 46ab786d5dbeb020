// Reading a job's log: the whole of an attempt's output as one JSON answer, or the job followed live as Server-Sent
// Events. Both read the store a page at a time, so a log of any size costs the server a page of memory.
import type { FastifyReply } from 'fastify';
import type { JobStreamEvent } from '../../core/api.js';
import { isTerminal } from '../../core/jobState.js';
import type { LogChunk, LogEntryRecord } from '../../store/store.js';
import type { ServerContext } from '../context.js';
import { eventStream } from '../http.js';
import type { StoreReads } from './jobLedger.js';

const SSE_KEEPALIVE_MS = 15_000;
/**
 * Chunks read from the store at a time: a chunk is what one append stored for an entry (at most 2M characters from
 * an executor), so a page stays in the tens of megabytes however long the log is.
 */
const CHUNKS_PER_PAGE = 16;

/** The stored chunks of an attempt's log after `afterSeq`, a page at a time, grouped by entry in order. */
async function* chunkPages(
  store: StoreReads,
  jobId: number,
  attempt: number,
  afterSeq: number,
): AsyncGenerator<{ byEntry: Map<number, LogChunk[]>; lastSeq: number }> {
  let lastSeq = afterSeq;
  for (;;) {
    const batch = await store.logs.readLogChunks(jobId, attempt, lastSeq, CHUNKS_PER_PAGE);
    const byEntry = new Map<number, LogChunk[]>();
    for (const chunk of batch) {
      const list = byEntry.get(chunk.index);
      if (list) list.push(chunk);
      else byEntry.set(chunk.index, [chunk]);
    }
    if (batch.length) lastSeq = batch[batch.length - 1].seq;
    yield { byEntry, lastSeq };
    if (batch.length < CHUNKS_PER_PAGE) return;
  }
}

/**
 * The body of GET /logs, `{"attempt":N,"entries":[{...entry, "out": "..."}]}`, produced a page of chunks at a time so
 * that a log of any size costs the server a page of memory, not the whole log. Each entry's `out` is its output up
 * to the `length` listed (output stored while the answer is being sent is left for the next request).
 */
export async function* logsBody(store: StoreReads, jobId: number, attempt: number): AsyncGenerator<string> {
  const entries = await store.logs.listLogEntries(jobId, attempt);
  yield `{"attempt":${JSON.stringify(attempt)},"entries":[`;
  for (const [i, entry] of entries.entries()) {
    // The entry as JSON without its closing brace, then "out" written piece by piece (each piece escaped alone:
    // JSON strings concatenate, and a chunk never ends inside a surrogate pair).
    yield `${i ? ',' : ''}${JSON.stringify(entry).slice(0, -1)},"out":"`;
    let written = 0;
    let afterSeq = 0;
    while (written < entry.length) {
      const page = await store.logs.readLogChunks(jobId, attempt, afterSeq, CHUNKS_PER_PAGE, entry.index);
      for (const chunk of page) {
        const data =
          chunk.offset + chunk.data.length > entry.length
            ? chunk.data.slice(0, entry.length - chunk.offset)
            : chunk.data;
        if (data) yield JSON.stringify(data).slice(1, -1);
        written = chunk.offset + data.length;
      }
      if (page.length < CHUNKS_PER_PAGE) break;
      afterSeq = page[page.length - 1].seq;
    }
    yield '"}';
  }
  yield ']}';
}

/**
 * Streams a job as Server-Sent Events until it is finished and its whole log has been sent. Without an explicit
 * attempt the stream follows the job across attempts (a reset or retried job starts a new one).
 */
export async function streamJob(
  ctx: ServerContext,
  jobId: number,
  fixedAttempt: number | undefined,
  reply: FastifyReply,
): Promise<void> {
  const { store, wakeups } = ctx;
  const { res, closed } = eventStream(reply, ctx.closing);
  // Typed by the contract (core/api.ts jobStreamEvents); `output`, the hot one, is written by hand below.
  const send = <K extends JobStreamEvent['event']>(
    event: K,
    data: Extract<JobStreamEvent, { event: K }>['data'],
  ): void => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  // The hot event, written without an object to walk: only the text needs escaping.
  const sendOutput = (chunk: LogChunk): void => {
    res.write(
      `event: output\ndata: {"index":${chunk.index},"offset":${chunk.offset},"data":${JSON.stringify(chunk.data)}}\n\n`,
    );
  };
  /** Waits while the client is slower than the log: what is read from the store is never more than a page ahead. */
  const drained = async (): Promise<void> => {
    if (!res.writableNeedDrain || closed.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        res.off('drain', done);
        closed.removeEventListener('abort', done);
        resolve();
      };
      res.on('drain', done);
      closed.addEventListener('abort', done);
    });
  };

  let attempt = -1;
  let afterSeq = 0;
  let lastState = '';
  const sentLength = new Map<number, number>();
  const announced = new Map<number, string>();
  const announce = (entry: LogEntryRecord, withResult: boolean): void => {
    const view = {
      index: entry.index,
      key: entry.key,
      command: entry.command,
      startTime: entry.startTime,
      exitCode: withResult ? entry.exitCode : null,
      durationMs: withResult ? entry.durationMs : null,
    };
    const text = JSON.stringify(view);
    if (announced.get(entry.index) !== text) {
      announced.set(entry.index, text);
      send('entry', view);
    }
  };

  try {
    while (!closed.aborted) {
      const waiter = wakeups.watchJobs([jobId]);
      const job = await store.jobs.getJob(jobId);
      if (!job) break;
      const wanted = fixedAttempt ?? job.attempt;
      if (wanted !== attempt) {
        attempt = wanted;
        afterSeq = 0;
        sentLength.clear();
        announced.clear();
        if (attempt > 0) send('attempt', { attempt });
      }
      if (attempt > 0) {
        // A page of chunks at a time (a client that connects late to a long log gets it in pieces, at its pace).
        for await (const read of chunkPages(store, jobId, attempt, afterSeq)) {
          if (closed.aborted) break;
          afterSeq = read.lastSeq;
          // Chunks are read before entries, so every chunk's entry is in the list.
          const entries = await store.logs.listLogEntries(jobId, attempt);
          for (const chunks of read.byEntry.values()) {
            const last = chunks[chunks.length - 1];
            sentLength.set(last.index, last.offset + last.data.length);
          }
          // Entry by entry: its start, its output, then its result once all its output has been sent.
          for (const entry of entries) {
            if (!announced.has(entry.index)) announce(entry, false);
            for (const chunk of read.byEntry.get(entry.index) ?? []) sendOutput(chunk);
            if (entry.exitCode !== null && (sentLength.get(entry.index) ?? 0) >= entry.length) announce(entry, true);
          }
          await drained();
        }
        if (closed.aborted) break;
      }
      const stateView = JSON.stringify({
        state: job.state,
        failureMessage: job.failureMessage,
        failureReason: job.failureReason,
        attempt: job.attempt,
        cancel: job.cancelRequested,
      });
      if (stateView !== lastState) {
        lastState = stateView;
        send('state', {
          state: job.state,
          queue: job.queue,
          attempt: job.attempt,
          executorName: job.executorName,
          failureMessage: job.failureMessage,
          failureReason: job.failureReason,
          cancelRequested: job.cancelRequested,
        });
      }
      const done =
        fixedAttempt !== undefined ? job.attempt !== fixedAttempt || isTerminal(job.state) : isTerminal(job.state);
      if (done) {
        waiter.cancel();
        send('end', { state: job.state });
        break;
      }
      if (!(await waiter.wait(SSE_KEEPALIVE_MS, closed)) && !closed.aborted) res.write(': keepalive\n\n');
      // Woken by an append: let the executor's answer go out before this reads the new output back and writes it
      // (the executor sends its next request as soon as the answer comes, and prepares it while this works).
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    res.end();
  }
}
