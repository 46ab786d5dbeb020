// Following a job's live log over Server-Sent Events, reconnecting (without repeating lines) if the connection drops.
import { setTimeout as sleep } from 'node:timers/promises';
import { formatDuration } from '../core/units.js';
import type { JobStreamEvent, LogEntryView } from '../core/api.js';
import { SseParser, jobStreamEvent, type SseMessage } from '../core/sse.js';
import { CliError, type ClientApi } from './client.js';

export interface FollowOptions {
  attempt?: number;
  /** Print raw events as JSON lines instead of the human view. */
  json: boolean;
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** An event stream's messages, whatever the network's chunk boundaries. */
export async function* sseMessages(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const ready: SseMessage[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    parser.push(decoder.decode(chunk, { stream: true }), (message) => ready.push(message));
    yield* ready.splice(0);
  }
}

/** A job stream's messages, typed by the API contract. */
async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<JobStreamEvent> {
  for await (const message of sseMessages(body)) {
    const event = jobStreamEvent(message);
    if (event) yield event;
  }
}

/**
 * Opens an event stream at `route`, trying again each second for a minute while the server cannot be reached; an
 * answer that is not a stream is thrown with the API's message (`what` says what was to be followed).
 */
export async function openStream(api: ClientApi, route: string, what: string): Promise<ReadableStream<Uint8Array>> {
  for (let failures = 0; ; failures++) {
    let res: Response;
    try {
      res = await api.fetch('GET', route);
    } catch (e) {
      if (failures >= 60) throw e;
      await sleep(1_000);
      continue;
    }
    if (res.ok && res.body) return res.body;
    const text = await res.text();
    let message = text;
    try {
      message = (JSON.parse(text) as { error: string }).error;
    } catch {
      // keep the text
    }
    throw new CliError(`cannot follow ${what}: ${message}`);
  }
}

/** Follows a job until it finishes; returns its final state. */
export async function followJob(api: ClientApi, jobId: number, opts: FollowOptions): Promise<string> {
  const out = opts.out ?? process.stdout;
  const err = opts.err ?? process.stderr;
  let attempt = 0;
  /** Characters printed per entry of the current attempt, so a reconnect does not repeat lines. */
  const printed = new Map<number, number>();
  const partial = new Map<number, string>();
  const entries = new Map<number, LogEntryView>();
  let lastState = '';
  let failures = 0;

  const printLines = (index: number, text: string): void => {
    const lines = ((partial.get(index) ?? '') + text).split('\n');
    partial.set(index, lines.pop() ?? '');
    for (const line of lines) {
      if (line.startsWith('stderr: ')) err.write(`${line.slice(8)}\n`);
      else out.write(`${line.startsWith('stdout: ') ? line.slice(8) : line}\n`);
    }
  };

  for (;;) {
    const query = opts.attempt ? `?attempt=${opts.attempt}` : '';
    const body = await openStream(api, `/jobs/${jobId}/logs/stream${query}`, `job ${jobId}`);
    failures = 0;
    try {
      for await (const message of readEvents(body)) {
        if (opts.json) {
          out.write(`${JSON.stringify({ event: message.event, ...message.data })}\n`);
        }
        if (message.event === 'attempt') {
          const data = message.data;
          if (data.attempt !== attempt) {
            attempt = data.attempt;
            printed.clear();
            partial.clear();
            entries.clear();
            if (attempt > 1 && !opts.json) err.write(`--- attempt ${attempt} ---\n`);
          }
        } else if (message.event === 'entry') {
          const entry = message.data;
          const seen = entries.get(entry.index);
          entries.set(entry.index, entry);
          if (opts.json) continue;
          if (!seen) err.write(`==> ${entry.key}: ${entry.command.join(' ')}\n`);
          if (entry.exitCode !== null && seen?.exitCode == null) {
            const rest = partial.get(entry.index);
            if (rest) printLines(entry.index, '\n');
            err.write(`<== ${entry.key}: exit ${entry.exitCode} in ${formatDuration(entry.durationMs ?? 0)}\n`);
          }
        } else if (message.event === 'output') {
          const data = message.data;
          const done = printed.get(data.index) ?? 0;
          const end = data.offset + data.data.length;
          if (end <= done) continue;
          const fresh = data.offset < done ? data.data.slice(done - data.offset) : data.data;
          printed.set(data.index, end);
          if (!opts.json) printLines(data.index, fresh);
        } else if (message.event === 'state') {
          const data = message.data;
          if (!opts.json && data.state !== lastState) {
            // The reason, unless it only repeats the state (canceled); servers before reasons send none.
            const reason = data.failureReason && data.failureReason !== data.state ? data.failureReason : undefined;
            if (['completed', 'failed', 'canceled'].includes(data.state)) {
              err.write(
                `job ${jobId} ${data.state}${reason ? ` (${reason})` : ''}${data.failureMessage ? `: ${data.failureMessage}` : ''}\n`,
              );
            } else if (data.state === 'queued') {
              // Say what we are waiting for: with no executor on the queue, nothing else would be printed.
              const retry =
                data.attempt > 0 && data.failureMessage
                  ? ` (attempt ${data.attempt} ended${reason ? `, ${reason}` : ''}: ${data.failureMessage})`
                  : '';
              err.write(`job ${jobId} is queued on "${data.queue}", waiting for an executor${retry}\n`);
            } else if (data.state === 'processing' && data.executorName) {
              err.write(`job ${jobId} is running on ${data.executorName} (attempt ${data.attempt})\n`);
            }
          }
          lastState = data.state;
        } else if (message.event === 'end') {
          return message.data.state;
        }
      }
    } catch (e) {
      if (++failures > 60) throw e;
    }
    // The stream ended without an end event: the server went away. Reconnect and carry on where we were.
    await sleep(1_000);
  }
}
