// The setup container's log, split back into the entries the other runtimes write (setup.git.init, …,
// setup.files): its script prints "<nonce> begin KEY" and "<nonce> end CODE" around each part. The nonce is random
// per job, so output from a fetched repository (or a git server's messages) cannot open or close an entry.
import type { EntryHandle } from '../../jobLog.js';
import type { SetupLog } from '../runtime.js';

export class SetupLogSplitter {
  private entry?: { handle: EntryHandle; started: number };

  constructor(
    private readonly nonce: string,
    private readonly log: SetupLog,
    private readonly command: (key: string) => string[],
    private readonly note: (key: string) => string | undefined,
  ) {}

  /** Takes log text (whole lines, the last one possibly not); never asks the stream to pause. */
  feed(text: string): boolean {
    const lines = text.split('\n');
    const last = lines.pop();
    for (const line of lines) this.line(line, true);
    if (last) this.line(last, false);
    return true;
  }

  private line(line: string, newline: boolean): void {
    const at = line.indexOf(`${this.nonce} `);
    if (at < 0) {
      this.entry?.handle.write('stdout', newline ? `${line}\n` : line);
      return;
    }
    // Output without a final line break runs into the marker: it belongs to the entry before it.
    if (at > 0) this.entry?.handle.write('stdout', `${line.slice(0, at)}\n`);
    const [word, ...rest] = line.slice(at + this.nonce.length + 1).split(' ');
    const arg = rest.join(' ');
    if (word === 'begin') {
      this.finish(1);
      const handle = this.log.startEntry(arg, this.command(arg));
      const note = this.note(arg);
      if (note) handle.note(note);
      this.entry = { handle, started: Date.now() };
    } else if (word === 'end') this.finish(Number(arg));
  }

  private finish(exitCode: number): void {
    if (!this.entry) return;
    this.entry.handle.finish(Number.isInteger(exitCode) ? exitCode : 1, Date.now() - this.entry.started);
    this.entry = undefined;
  }

  /** The log ended: an entry still open ended with the container. */
  end(exitCode: number): void {
    this.finish(exitCode);
  }
}
