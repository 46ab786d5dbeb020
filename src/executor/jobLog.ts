// One attempt's log, kept on the executor until the server has stored it. Output is appended by offset, so a
// request whose answer was lost can be sent again without duplicating lines, and a server that is down only
// delays delivery: nothing is dropped while the attempt is current.
import type { LogEntryUpdate } from '../core/protocol.js';
import type { Redactor } from './redactor.js';

export type Stream = 'stdout' | 'stderr';

interface Entry {
  index: number;
  key: string;
  command: string[];
  startTime: number;
  /** Characters of output the server has acknowledged. */
  acked: number;
  /** Redacted output not yet acknowledged. */
  pending: string;
  exitCode?: number;
  durationMs?: number;
  /** The server has the entry with its final exit code. */
  settled: boolean;
  /** The server knows the entry exists (so an empty step still shows up). */
  announced: boolean;
  partial: Record<Stream, string>;
}

export interface EntryHandle {
  write(stream: Stream, text: string): void;
  /** Records a line of the executor's own about this entry (shown as stderr). */
  note(line: string): void;
  finish(exitCode: number, durationMs: number): void;
}

/** Output characters in one append request (the server accepts bodies up to 16 MiB). */
const MAX_CHARS_PER_REQUEST = 2 * 1024 * 1024;

/** A partial line longer than this is sent without waiting for its newline. */
const MAX_PARTIAL_LINE = 64 * 1024;

/**
 * What a terminal would show of a line: progress output rewrites itself with carriage returns ("10%\r20%\r…"),
 * so only the last state is kept, and a CRLF line ending is dropped.
 */
function terminalView(line: string): string {
  const parts = line.replace(/\r+$/, '').split('\r');
  return parts[parts.length - 1];
}

export type LogSender = (entries: LogEntryUpdate[]) => Promise<{ entries: { index: number; length: number }[] }>;

export class JobLog {
  private readonly entries: Entry[] = [];
  private totalBytes = 0;
  private truncated = false;
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly send: LogSender,
    private readonly redactor: Redactor,
    private readonly maxBytes: number,
  ) {}

  startEntry(key: string, command: string[]): EntryHandle {
    const entry: Entry = {
      index: this.entries.length, key, command: command.map((c) => this.redactor.redact(c)), startTime: Date.now(),
      acked: 0, pending: '', settled: false, announced: false, partial: { stdout: '', stderr: '' },
    };
    this.entries.push(entry);
    return {
      write: (stream, text) => this.write(entry, stream, text),
      // Redacted whole, then shown line by line: a multi-line note may hold a multi-line secret.
      note: (text) => {
        for (const line of this.redactor.redact(text).split('\n')) this.addRedactedLine(entry, 'stderr', terminalView(line));
      },
      finish: (exitCode, durationMs) => {
        for (const stream of ['stdout', 'stderr'] as const) {
          if (entry.partial[stream]) this.addLine(entry, stream, entry.partial[stream]);
          entry.partial[stream] = '';
        }
        entry.exitCode = exitCode;
        entry.durationMs = durationMs;
      },
    };
  }

  private write(entry: Entry, stream: Stream, text: string): void {
    const lines = (entry.partial[stream] + text).split('\n');
    entry.partial[stream] = lines.pop() ?? '';
    for (const line of lines) this.addLine(entry, stream, line);
    if (entry.partial[stream].length > MAX_PARTIAL_LINE) this.sendPartialHead(entry, stream);
  }

  /**
   * Sends the start of a partial line that grew too long, as a line of its own. The last `maxLength - 1`
   * characters stay buffered: a secret that starts in them may go on in the next write, and one that starts
   * before them is whole in the buffer, so the part sent never ends inside a secret.
   */
  private sendPartialHead(entry: Entry, stream: Stream): void {
    const partial = entry.partial[stream];
    let end = partial.length - Math.max(0, this.redactor.maxLength - 1);
    if (end <= 0) return;
    if (/[\uD800-\uDBFF]/.test(partial[end - 1])) end--;
    const { redacted, consumed } = this.redactor.redactHead(partial, end);
    entry.partial[stream] = partial.slice(consumed);
    this.addRedactedLine(entry, stream, terminalView(redacted));
  }

  private addLine(entry: Entry, stream: Stream, line: string): void {
    this.addRedactedLine(entry, stream, this.redactor.redact(terminalView(line)));
  }

  private addRedactedLine(entry: Entry, stream: Stream, line: string): void {
    if (this.truncated) return;
    const text = `${stream}: ${line}\n`;
    const bytes = Buffer.byteLength(text);
    if (this.totalBytes + bytes > this.maxBytes) {
      this.truncated = true;
      entry.pending += `stderr: [dockhand] log truncated: this job's output passed ${this.maxBytes} bytes; the rest was dropped\n`;
      return;
    }
    this.totalBytes += bytes;
    entry.pending += text;
  }

  /** True while something is not yet acknowledged by the server. */
  get dirty(): boolean {
    return this.entries.some((e) => !e.announced || e.pending.length > 0 || (e.exitCode !== undefined && !e.settled));
  }

  /** Sends everything pending in one request; concurrent calls share the request in flight. */
  flush(): Promise<void> {
    if (this.inFlight) return this.inFlight;
    this.inFlight = this.sendPending().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async sendPending(): Promise<void> {
    // Bounded requests: output buffered while the server was away goes in several, each well under its body limit.
    let budget = MAX_CHARS_PER_REQUEST;
    const batch: { entry: Entry; sent: number; final: boolean }[] = [];
    for (const entry of this.entries) {
      let sent = Math.min(entry.pending.length, budget);
      // Never split a surrogate pair: the halves would not survive UTF-8 on the way to the database.
      if (sent > 0 && sent < entry.pending.length && /[\uD800-\uDBFF]/.test(entry.pending[sent - 1])) sent--;
      const final = entry.exitCode !== undefined && !entry.settled && sent === entry.pending.length;
      if (entry.announced && sent === 0 && !final) continue;
      budget -= sent;
      batch.push({ entry, sent, final });
    }
    if (batch.length === 0) return;
    const updates: LogEntryUpdate[] = batch.map(({ entry, sent, final }) => ({
      index: entry.index, key: entry.key, command: entry.command, startTime: entry.startTime, offset: entry.acked,
      out: entry.pending.slice(0, sent),
      // The exit code goes with the last of the output, so readers never see a result before the lines behind it.
      ...(final ? { exitCode: entry.exitCode, durationMs: entry.durationMs } : {}),
    }));
    const answer = await this.send(updates);
    const lengths = new Map(answer.entries.map((e) => [e.index, e.length]));
    for (const { entry, sent, final } of batch) {
      entry.pending = entry.pending.slice(sent);
      entry.acked = lengths.get(entry.index) ?? entry.acked + sent;
      entry.announced = true;
      if (final) entry.settled = true;
    }
  }
}
