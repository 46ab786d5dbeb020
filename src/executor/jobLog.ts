// One attempt's log, kept on the executor until the server has stored it. Output is appended by offset, so a
// request whose answer was lost can be sent again without duplicating lines, and a server that is down only
// delays delivery: nothing is dropped while the attempt is current. The output held unacknowledged is bounded:
// past `highWaterMark` characters the log says so (`write` returns false, `writable` is false) and the runtime
// stops reading the step's output until `whenWritable()` resolves, so a step that writes faster than the server
// stores is held back like one writing to a slow terminal, instead of the executor's memory growing.
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
  /**
   * Redacted output not yet acknowledged, as the pieces it was added in (whole lines, usually many per piece).
   * A list, not one string grown with `+=`: V8 would flatten such a string each time its head is sliced off.
   */
  pending: string[];
  /** Characters in `pending`. */
  pendingChars: number;
  exitCode?: number;
  durationMs?: number;
  /** The server has the entry with its final exit code. */
  settled: boolean;
  /** The server knows the entry exists (so an empty step still shows up). */
  announced: boolean;
  partial: Record<Stream, string>;
}

export interface EntryHandle {
  /** Takes output of the step; false when the log holds as much unsent output as it may (see `whenWritable`). */
  write(stream: Stream, text: string): boolean;
  /** Resolves when the log can take more output (at once when it can now). */
  whenWritable(): Promise<void>;
  /** Records a line of the executor's own about this entry (shown as stderr). */
  note(line: string): void;
  finish(exitCode: number, durationMs: number): void;
}

export interface JobLogOptions {
  /** Unacknowledged output characters past which the log asks for no more (`write` returns false). */
  highWaterMark?: number;
  /** Pending characters that start a request at once, without waiting for the next flush. */
  eagerFlushChars?: number;
}

/** Output characters in one append request (the server accepts bodies up to 16 MiB, JSON escapes included). */
const MAX_CHARS_PER_REQUEST = 2 * 1024 * 1024;

/**
 * Two requests' worth: one in flight and the next ready when its answer comes, so the pipe to the server never
 * idles, while a line waits behind at most this much output (at 50 MB/s, about 170 ms).
 */
const DEFAULT_HIGH_WATER_MARK = 2 * MAX_CHARS_PER_REQUEST;

/** Enough output for a request to be worth sending before the flush timer fires. */
const DEFAULT_EAGER_FLUSH_CHARS = 256 * 1024;

/** A partial line longer than this is sent without waiting for its newline. */
const MAX_PARTIAL_LINE = 64 * 1024;

/**
 * What a terminal would show of a line: progress output rewrites itself with carriage returns ("10%\r20%\r…"),
 * so only the last state is kept, and a CRLF line ending is dropped.
 */
function terminalView(line: string): string {
  if (!line.includes('\r')) return line; // nearly every line: no regular expression
  const parts = line.replace(/\r+$/, '').split('\r');
  return parts[parts.length - 1];
}

const isHighSurrogate = (code: number): boolean => code >= 0xd800 && code <= 0xdbff;

export type LogSender = (entries: LogEntryUpdate[]) => Promise<{ entries: { index: number; length: number }[] }>;

export class JobLog {
  private readonly entries: Entry[] = [];
  private totalBytes = 0;
  private truncated = false;
  private inFlight: Promise<void> | undefined;
  /** Characters not yet acknowledged, over all entries (what `highWaterMark` bounds). */
  private pendingChars = 0;
  /** The last request failed: no eager sends until a flush succeeds (the agent's timer retries, with its pace). */
  private failing = false;
  private waiters: (() => void)[] = [];
  private readonly highWaterMark: number;
  private readonly eagerFlushChars: number;

  constructor(
    private readonly send: LogSender,
    private readonly redactor: Redactor,
    private readonly maxBytes: number,
    options: JobLogOptions = {},
  ) {
    this.highWaterMark = options.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
    this.eagerFlushChars = options.eagerFlushChars ?? DEFAULT_EAGER_FLUSH_CHARS;
  }

  startEntry(key: string, command: string[]): EntryHandle {
    const entry: Entry = {
      index: this.entries.length,
      key,
      command: command.map((c) => this.redactor.redact(c)),
      startTime: Date.now(),
      acked: 0,
      pending: [],
      pendingChars: 0,
      settled: false,
      announced: false,
      partial: { stdout: '', stderr: '' },
    };
    this.entries.push(entry);
    return {
      write: (stream, text) => {
        this.write(entry, stream, text);
        return this.writable;
      },
      whenWritable: () => this.whenWritable(),
      // Redacted whole, then shown line by line: a multi-line note may hold a multi-line secret.
      note: (text) => {
        for (const line of this.redactor.redact(text).split('\n'))
          this.addRedactedLine(entry, 'stderr', terminalView(line));
        this.sendEagerly();
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

  /** False while the output held unacknowledged is at the high-water mark: the step's output should wait. */
  get writable(): boolean {
    return this.pendingChars < this.highWaterMark;
  }

  /** Resolves once the log is writable (after the server acknowledged enough); at once when it is now. */
  whenWritable(): Promise<void> {
    if (this.writable) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private write(entry: Entry, stream: Stream, text: string): void {
    const lastNewline = text.lastIndexOf('\n');
    if (lastNewline === -1) {
      entry.partial[stream] += text;
    } else {
      // All the complete lines of this write are handled as one block: one scan, one piece of pending output.
      const lines = entry.partial[stream] + text.slice(0, lastNewline);
      entry.partial[stream] = text.slice(lastNewline + 1);
      this.addLines(entry, stream, lines);
    }
    if (entry.partial[stream].length > MAX_PARTIAL_LINE) this.sendPartialHead(entry, stream);
    this.sendEagerly();
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
    if (isHighSurrogate(partial.charCodeAt(end - 1))) end--;
    const { redacted, consumed } = this.redactor.redactHead(partial, end);
    entry.partial[stream] = partial.slice(consumed);
    this.addRedactedLine(entry, stream, terminalView(redacted));
  }

  /**
   * Adds whole lines joined by '\n' (without the last one's). Each line is redacted and shown on its own; when the
   * block has no carriage return and nothing to mask (redacting the block changes nothing, so no line of it would
   * change), it is prefixed in one pass instead of line by line.
   */
  private addLines(entry: Entry, stream: Stream, lines: string): void {
    if (this.truncated) return;
    if (lines.includes('\r') || this.redactor.redact(lines) !== lines) {
      for (const line of lines.split('\n')) this.addLine(entry, stream, line);
      return;
    }
    const prefix = `${stream}: `;
    const text = `${prefix}${lines.replaceAll('\n', `\n${prefix}`)}\n`;
    const bytes = Buffer.byteLength(text);
    if (this.totalBytes + bytes > this.maxBytes) {
      // The cap falls inside this block: line by line, to keep every line that still fits.
      for (const line of lines.split('\n')) this.addRedactedLine(entry, stream, line);
      return;
    }
    this.totalBytes += bytes;
    this.append(entry, text);
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
      this.append(
        entry,
        `stderr: [dockhand] log truncated: this job's output passed ${this.maxBytes} bytes; the rest was dropped\n`,
      );
      return;
    }
    this.totalBytes += bytes;
    this.append(entry, text);
  }

  private append(entry: Entry, text: string): void {
    entry.pending.push(text);
    entry.pendingChars += text.length;
    this.pendingChars += text.length;
  }

  /** True while something is not yet acknowledged by the server. */
  get dirty(): boolean {
    return this.entries.some((e) => !e.announced || e.pendingChars > 0 || (e.exitCode !== undefined && !e.settled));
  }

  /** Sends everything pending in one request; concurrent calls share the request in flight. */
  flush(): Promise<void> {
    if (this.inFlight) return this.inFlight;
    this.inFlight = this.sendPending().then(
      () => {
        this.inFlight = undefined;
        this.failing = false;
        this.wakeWriters();
        // More than a request's worth may have come in while this one was on its way: send it now.
        this.sendEagerly();
      },
      (err: unknown) => {
        this.inFlight = undefined;
        this.failing = true;
        throw err;
      },
    );
    return this.inFlight;
  }

  /**
   * Starts a request without waiting for the flush timer when enough output is pending and none is in flight.
   * Its failure is left to the timer's next flush, which reports it to the agent and retries.
   */
  private sendEagerly(): void {
    if (this.inFlight || this.failing || this.pendingChars < this.eagerFlushChars) return;
    this.flush().catch(() => undefined);
  }

  private wakeWriters(): void {
    if (!this.writable || this.waiters.length === 0) return;
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  private async sendPending(): Promise<void> {
    // Bounded requests: output buffered while the server was away goes in several, each well under its body limit.
    let budget = MAX_CHARS_PER_REQUEST;
    const batch: { entry: Entry; out: string; final: boolean }[] = [];
    for (const entry of this.entries) {
      const out = budget > 0 ? headOf(entry.pending, budget) : '';
      const final = entry.exitCode !== undefined && !entry.settled && out.length === entry.pendingChars;
      if (entry.announced && out.length === 0 && !final) continue;
      budget -= out.length;
      batch.push({ entry, out, final });
    }
    if (batch.length === 0) return;
    const updates: LogEntryUpdate[] = batch.map(({ entry, out, final }) => ({
      index: entry.index,
      key: entry.key,
      command: entry.command,
      startTime: entry.startTime,
      offset: entry.acked,
      out,
      // The exit code goes with the last of the output, so readers never see a result before the lines behind it.
      ...(final ? { exitCode: entry.exitCode, durationMs: entry.durationMs } : {}),
    }));
    const answer = await this.send(updates);
    const lengths = new Map(answer.entries.map((e) => [e.index, e.length]));
    for (const { entry, out, final } of batch) {
      dropHead(entry.pending, out.length);
      entry.pendingChars -= out.length;
      this.pendingChars -= out.length;
      entry.acked = lengths.get(entry.index) ?? entry.acked + out.length;
      entry.announced = true;
      if (final) entry.settled = true;
    }
  }
}

/** The first `max` characters of `pieces` joined (fewer when the cut would split a surrogate pair). */
function headOf(pieces: string[], max: number): string {
  const taken: string[] = [];
  let chars = 0;
  for (const piece of pieces) {
    if (chars + piece.length <= max) {
      taken.push(piece);
      chars += piece.length;
      if (chars === max) break;
      continue;
    }
    let cut = max - chars;
    // Never split a surrogate pair: the halves would not survive UTF-8 on the way to the database.
    if (cut > 0 && isHighSurrogate(piece.charCodeAt(cut - 1))) cut--;
    if (cut > 0) taken.push(piece.slice(0, cut));
    break;
  }
  return taken.length === 1 ? taken[0] : taken.join('');
}

/** Removes the first `chars` characters from `pieces` (the output the server acknowledged). */
function dropHead(pieces: string[], chars: number): void {
  let whole = 0;
  while (whole < pieces.length && chars >= pieces[whole].length) chars -= pieces[whole++].length;
  // One splice, not a shift per piece: a backlog of short lines can be tens of thousands of pieces.
  pieces.splice(0, whole);
  if (chars > 0) pieces[0] = pieces[0].slice(chars);
}
