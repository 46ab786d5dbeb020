// Server-Sent Events, read: one parser for the CLI's follower and the web UI's log view (no imports at run time,
// so the UI bundles it as is). Splits a text/event-stream body into messages whatever the network's chunk
// boundaries, and types a job stream's messages by the API contract (core/api.ts).
import type { JobStreamEvent } from './api.js';

export interface SseMessage {
  event: string;
  data: string;
}

export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];

  /** Feeds decoded text; calls `emit` for each message it completes. */
  push(text: string, emit: (message: SseMessage) => void): void {
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

  private line(line: string, emit: (message: SseMessage) => void): void {
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

const JOB_STREAM_EVENTS: ReadonlySet<string> = new Set<JobStreamEvent['event']>([
  'attempt',
  'entry',
  'output',
  'state',
  'end',
]);

/** A job stream's message with its data parsed; undefined for a message of another name (from a newer server). */
export function jobStreamEvent(message: SseMessage): JobStreamEvent | undefined {
  if (!JOB_STREAM_EVENTS.has(message.event)) return undefined;
  return { event: message.event, data: JSON.parse(message.data) as unknown } as JobStreamEvent;
}
