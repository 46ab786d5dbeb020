// Follows one container's log while it runs. The log is asked for with timestamps, so a stream that drops is
// opened again from the last second seen (the API's sinceTime has whole seconds) and the lines already delivered
// are skipped by their timestamps: nothing is lost and nothing repeated. The API mixes stdout and stderr into one
// stream; nothing can take them apart again.
import { StringDecoder } from 'node:string_decoder';
import type { ApiError, Cluster } from './cluster.js';

export interface LogReader {
  /** Text of the log (whole lines, the last one possibly without its line break); false: pause. */
  output(text: string): boolean;
  writable(): Promise<void>;
}

export interface FollowOptions {
  pod: string;
  container: string;
  /** Whether the container has terminated, per the pod's watch. */
  terminated(): boolean;
  /** Resolves at the pod's next change, or after `timeoutMs`. */
  changed(timeoutMs: number): Promise<void>;
  /** A refusal the follower cannot wait out (the pod is gone): stop following, with this error. */
  fatal(error: ApiError): boolean;
  signal: AbortSignal;
}

/** How long a log stream may stay open after the watch saw its container end. */
const TERMINATED_GRACE_MS = 5_000;

/** The longest line end held back waiting for its line break. */
const MAX_PARTIAL_LINE = 256 * 1024;

/** "2026-12-03T10:00:00.123Z" as a key that sorts by time: seconds, then the fraction padded to nanoseconds. */
function timeKey(stamp: string): string | undefined {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(stamp);
  if (!m) return undefined;
  // Offsets other than Z do not occur (the kubelet writes UTC); keep them comparable all the same.
  return `${m[1]}.${(m[2] ?? '').padEnd(9, '0')}${m[3]}`;
}

/**
 * Delivers the container's log to `reader` until the container has terminated and its log has ended, or `signal`
 * aborts. Returns how many times the stream was opened again.
 */
export async function followContainerLog(cluster: Cluster, reader: LogReader, opts: FollowOptions): Promise<number> {
  /** The newest timestamp delivered, and how many lines carried exactly it. */
  let last: { key: string; stamp: string; count: number } | undefined;
  let reopened = 0;
  /** Lines at the last timestamp that a reopened stream repeats. */
  let skipAtLast = 0;
  let refusedAfterEnd = 0;
  let refusals = 0;
  /** The end of the stream after its last line break: delivered once whole (or when the log ends). */
  let partial = '';
  /** A line too long to hold was delivered in part: what follows, up to its break, is its rest (no timestamp). */
  let midLine = false;

  const deliverLine = (line: string, final: boolean): boolean => {
    if (midLine) {
      midLine = false;
      return reader.output(final ? line : `${line}\n`);
    }
    const space = line.indexOf(' ');
    const key = space > 0 ? timeKey(line.slice(0, space)) : undefined;
    if (key === undefined) return reader.output(final ? line : `${line}\n`);
    const text = line.slice(space + 1);
    if (last && key < last.key) return true;
    if (last && key === last.key) {
      if (skipAtLast > 0) {
        skipAtLast--;
        return true;
      }
      last.count++;
    } else last = { key, stamp: line.slice(0, space), count: 1 };
    return reader.output(final ? text : `${text}\n`);
  };

  for (;;) {
    if (opts.signal.aborted) return reopened;
    partial = '';
    midLine = false;
    // A character cut between two chunks is kept until its last byte arrives.
    const decoder = new StringDecoder('utf8');
    const sinceTime = last ? `${last.stamp.slice(0, 19)}Z` : undefined;
    skipAtLast = last?.count ?? 0;
    // Once the watch says the container ended, a stream that has brought nothing for TERMINATED_GRACE_MS (while
    // this side was ready to read) is a silent one: cut it and read the rest from where it was (a follow of an
    // ended container ends at once). A stream paused by backpressure, or still delivering, is left alone.
    const attempt = new AbortController();
    let streaming = true;
    let paused = false;
    let lastData = Date.now();
    void (async () => {
      while (streaming && !opts.signal.aborted) {
        await opts.changed(1_000);
        if (paused) lastData = Date.now();
        if (streaming && opts.terminated() && Date.now() - lastData > TERMINATED_GRACE_MS) attempt.abort();
      }
    })();
    const end = await cluster.streamLog(
      opts.pod,
      opts.container,
      { sinceTime },
      {
        data: (chunk) => {
          lastData = Date.now();
          const text = partial + decoder.write(chunk);
          const lines = text.split('\n');
          partial = lines.pop() ?? '';
          let more = true;
          for (const line of lines) more = deliverLine(line, false) && more;
          // A step that writes without line breaks must not grow the executor's memory: pass the line on in part.
          if (partial.length > MAX_PARTIAL_LINE) {
            more = deliverLine(partial, true) && more;
            partial = '';
            midLine = true;
          }
          paused = !more;
          return more;
        },
        writable: async () => {
          await reader.writable();
          paused = false;
          lastData = Date.now();
        },
      },
      AbortSignal.any([opts.signal, attempt.signal]),
    );
    streaming = false;
    if (opts.signal.aborted) return reopened;
    if (end.kind === 'refused') {
      if (opts.fatal(end.error)) throw end.error;
      // An ended container whose log is still refused will not have one (its node went away, say).
      if (opts.terminated() && ++refusedAfterEnd > 10) throw end.error;
      // Not started yet (400 "waiting to start") or no node yet (204): the kubelet may be a moment behind the
      // status the watch showed, so ask again soon, then less often (or as soon as the pod moves).
      await opts.changed(Math.min(50 * 2 ** refusals++, 1_000));
      continue;
    }
    if (end.kind === 'ended') {
      // The server ends a follow when the container ends; the watch may tell us a moment later.
      for (let i = 0; i < 10 && !opts.terminated() && !opts.signal.aborted; i++) await opts.changed(500);
      if (opts.terminated()) {
        if (partial) deliverLine(partial, true);
        return reopened;
      }
    }
    // Dropped (or ended while the container still runs): open it again from where it was.
    reopened++;
    if (!opts.terminated()) await opts.changed(reopened > 3 ? 1_000 : 50);
  }
}
