// Server-Sent Events over fetch(): EventSource cannot send the Authorization header the API needs.

export interface SseEvent {
  event: string;
  data: string;
}

/** Splits a text/event-stream body into events, whatever the network's chunk boundaries. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];

  push(text: string, emit: (e: SseEvent) => void): void {
    this.buffer += text;
    let start = 0;
    for (;;) {
      const nl = this.buffer.indexOf('\n', start);
      if (nl < 0) break;
      let line = this.buffer.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.line(line, emit);
    }
    this.buffer = this.buffer.slice(start);
  }

  private line(line: string, emit: (e: SseEvent) => void): void {
    if (line === '') {
      if (this.data.length) emit({ event: this.event || 'message', data: this.data.join('\n') });
      this.event = '';
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return; // a comment: keepalive
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
  }
}

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
