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
