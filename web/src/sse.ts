// Server-Sent Events over fetch(): EventSource cannot send the Authorization header the API needs. The parser is
// the CLI's too (src/core/sse.ts).
import { SseParser, type SseMessage } from '../../src/core/sse';

export type SseEvent = SseMessage;

/**
 * Reads an SSE stream until it ends or `signal` aborts. Resolves when the server closes it; rejects on an HTTP
 * error (with the API's message) or a network failure.
 */
export async function readSse(
  url: string,
  headers: Record<string, string>,
  signal: AbortSignal,
  onEvent: (e: SseEvent) => void,
): Promise<void> {
  const res = await fetch(url, { headers: { ...headers, accept: 'text/event-stream' }, signal, cache: 'no-store' });
  if (!res.ok || !res.body) {
    let message = `HTTP ${res.status}`;
    try {
      message = ((await res.json()) as { error?: string }).error ?? message;
    } catch {
      // not JSON
    }
    throw Object.assign(new Error(message), { status: res.status });
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value, onEvent);
    }
  } finally {
    reader.releaseLock();
  }
}

/** Where a followed stream is: what a page shows next to a live log. */
export type StreamStatus = 'connecting' | 'live' | 'ended' | 'reconnecting' | 'failed';

/**
 * Follows a stream until the server sends its end (`onEvent` answers 'end'), `signal` aborts, or it fails for good
 * (a 4xx: `onStatus('failed', error)`). A dropped connection is opened again after a pause (1 s, doubling to 10 s,
 * back to 1 s once events flow), at the URL `url()` gives then, so a follower resumes where it was.
 */
export async function followSse(
  url: () => string,
  headers: () => Record<string, string>,
  signal: AbortSignal,
  onEvent: (e: SseEvent) => 'end' | void,
  onStatus: (status: StreamStatus, error?: Error) => void,
): Promise<void> {
  let ended = false;
  let delay = 1000;
  while (!signal.aborted && !ended) {
    try {
      await readSse(url(), headers(), signal, (e) => {
        onStatus('live');
        delay = 1000;
        if (onEvent(e) === 'end') ended = true;
      });
      if (!ended && !signal.aborted) onStatus('reconnecting');
    } catch (err) {
      if (signal.aborted) return;
      const code = (err as { status?: number }).status;
      if (code && code >= 400 && code < 500) {
        onStatus('failed', err as Error);
        return;
      }
      onStatus('reconnecting');
    }
    if (!ended && !signal.aborted) {
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10_000);
    }
  }
  if (ended) onStatus('ended');
}
