import { describe, it, expect } from 'vitest';
import { JobLog, type LogSender } from '../../src/executor/jobLog.js';
import { Redactor } from '../../src/executor/redactor.js';
import type { LogEntryUpdate } from '../../src/core/protocol.js';

interface StoredEntry {
  key: string;
  command: string[];
  text: string;
  exitCode?: number;
  durationMs?: number;
  /** The stored text at the moment the exit code arrived. */
  textAtExit?: string;
}

/**
 * A fake coordinator that stores log entries with the same offset rule as the store's appendLogsMany: output that
 * overlaps what is stored is cut to its new tail. It can fail a request before or after storing it.
 */
class FakeServer {
  readonly entries = new Map<number, StoredEntry>();
  readonly requests: LogEntryUpdate[][] = [];
  failBeforeStore = 0;
  failAfterStore = 0;
  /** When set, each request waits for this before answering. */
  gate: Promise<void> | undefined;

  readonly send: LogSender = async (updates) => {
    this.requests.push(structuredClone(updates));
    if (this.gate) await this.gate;
    if (this.failBeforeStore > 0) {
      this.failBeforeStore--;
      throw new Error('connection refused');
    }
    const answer = updates.map((u) => {
      let entry = this.entries.get(u.index);
      if (!entry) {
        entry = { key: u.key, command: u.command, text: '' };
        this.entries.set(u.index, entry);
      }
      const length = entry.text.length;
      const fresh = u.offset >= length ? u.out : u.out.slice(length - u.offset);
      entry.text += fresh;
      if (u.exitCode !== undefined) {
        entry.exitCode = u.exitCode;
        entry.durationMs = u.durationMs;
        entry.textAtExit ??= entry.text;
      }
      return { index: u.index, length: entry.text.length };
    });
    if (this.failAfterStore > 0) {
      this.failAfterStore--;
      throw new Error('socket hang up (the answer was lost)');
    }
    return { entries: answer };
  };

  text(index: number): string | undefined {
    return this.entries.get(index)?.text;
  }
}

function setup(maxChars = 1_000_000, redactor = new Redactor()) {
  const server = new FakeServer();
  const log = new JobLog(server.send, redactor, maxChars);
  return { server, log };
}

describe('JobLog', () => {
  it('is clean before anything is logged', async () => {
    const { server, log } = setup();
    expect(log.dirty).toBe(false);
    await log.flush();
    expect(server.requests).toHaveLength(0);
  });

  it('prefixes each line with its stream', async () => {
    const { server, log } = setup();
    const e = log.startEntry('step-1', ['bash', 'script.sh']);
    e.write('stdout', 'hello\nworld\n');
    e.write('stderr', 'oops\n');
    await log.flush();
    expect(server.text(0)).toBe('stdout: hello\nstdout: world\nstderr: oops\n');
    expect(server.entries.get(0)).toMatchObject({ key: 'step-1', command: ['bash', 'script.sh'] });
  });

  it('strips carriage returns at line ends', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'dos line\r\n');
    await log.flush();
    expect(server.text(0)).toBe('stdout: dos line\n');
  });

  it('keeps what a terminal would show of progress lines rewritten with carriage returns', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stderr', 'Receiving objects:  10%\rReceiving objects:  55%\rReceiving objects: 100%, done.\r\n');
    await log.flush();
    expect(server.text(0)).toBe('stderr: Receiving objects: 100%, done.\n');
  });

  it('announces an entry with no output yet', async () => {
    const { server, log } = setup();
    log.startEntry('quiet', ['true']);
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(server.entries.get(0)).toMatchObject({ key: 'quiet', text: '' });
    expect(server.requests[0][0]).toMatchObject({ index: 0, offset: 0, out: '' });
    expect(server.requests[0][0].exitCode).toBeUndefined();
    expect(log.dirty).toBe(false);
  });

  it('holds a partial line until its newline arrives', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'one\ntw');
    await log.flush();
    expect(server.text(0)).toBe('stdout: one\n');
    e.write('stdout', 'o\nthr');
    await log.flush();
    expect(server.text(0)).toBe('stdout: one\nstdout: two\n');
    e.finish(0, 12);
    await log.flush();
    expect(server.text(0)).toBe('stdout: one\nstdout: two\nstdout: thr\n');
  });

  it('keeps stdout and stderr partial lines apart', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'out-');
    e.write('stderr', 'err-');
    e.write('stdout', 'line\n');
    e.write('stderr', 'line\n');
    await log.flush();
    expect(server.text(0)).toBe('stdout: out-line\nstderr: err-line\n');
  });

  it('sends a very long partial line without waiting for its newline', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'x'.repeat(70 * 1024));
    await log.flush();
    expect(server.text(0)).toBe(`stdout: ${'x'.repeat(70 * 1024)}\n`);
  });

  it('records notes as stderr lines', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.note('could not run git');
    await log.flush();
    expect(server.text(0)).toBe('stderr: could not run git\n');
  });

  it('sends new output from the acknowledged offset', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'a\n');
    await log.flush();
    e.write('stdout', 'b\n');
    await log.flush();
    expect(server.requests.map((r) => [r[0].offset, r[0].out])).toEqual([
      [0, 'stdout: a\n'],
      ['stdout: a\n'.length, 'stdout: b\n'],
    ]);
    expect(server.text(0)).toBe('stdout: a\nstdout: b\n');
  });

  it('keeps output when the server cannot be reached and sends it later', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'a\n');
    server.failBeforeStore = 1;
    await expect(log.flush()).rejects.toThrow(/connection refused/);
    expect(log.dirty).toBe(true);
    e.write('stdout', 'b\n');
    await log.flush();
    expect(server.text(0)).toBe('stdout: a\nstdout: b\n');
    expect(log.dirty).toBe(false);
  });

  it('does not duplicate output when a stored request is sent again', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'first\n');
    await log.flush();
    const acked = server.text(0)!.length;

    e.write('stdout', 'second\n');
    server.failAfterStore = 1; // stored, but the answer is lost
    await expect(log.flush()).rejects.toThrow(/answer was lost/);
    expect(server.text(0)).toBe('stdout: first\nstdout: second\n');
    expect(log.dirty).toBe(true);

    e.write('stdout', 'third\n');
    await log.flush();
    const resent = server.requests[2][0];
    expect(resent.offset).toBe(acked);
    expect(resent.out).toBe('stdout: second\nstdout: third\n');
    expect(server.text(0)).toBe('stdout: first\nstdout: second\nstdout: third\n');
    expect(log.dirty).toBe(false);

    // And the next request continues from what the server reported, not from what was sent.
    e.write('stdout', 'fourth\n');
    await log.flush();
    expect(server.requests[3][0].offset).toBe('stdout: first\nstdout: second\nstdout: third\n'.length);
    expect(server.text(0)).toBe('stdout: first\nstdout: second\nstdout: third\nstdout: fourth\n');
  });

  it('survives several lost answers in a row', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    let expected = '';
    server.failAfterStore = 3;
    for (let i = 0; i < 5; i++) {
      e.write('stdout', `line ${i}\n`);
      expected += `stdout: line ${i}\n`;
      await log.flush().catch(() => undefined);
    }
    e.finish(0, 1);
    while (log.dirty) await log.flush();
    expect(server.text(0)).toBe(expected);
    expect(server.entries.get(0)!.exitCode).toBe(0);
  });

  it('sends the exit code only with the last of the output', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'done\npartial');
    await log.flush();
    expect(server.requests.flat().some((u) => u.exitCode !== undefined)).toBe(false);
    e.finish(3, 1234);
    await log.flush();
    const last = server.requests.at(-1)![0];
    expect(last).toMatchObject({ exitCode: 3, durationMs: 1234, out: 'stdout: partial\n' });
    expect(server.entries.get(0)).toMatchObject({
      exitCode: 3,
      durationMs: 1234,
      textAtExit: 'stdout: done\nstdout: partial\n',
    });
    expect(log.dirty).toBe(false);
    await log.flush();
    expect(server.requests).toHaveLength(2);
  });

  it('resends the exit code when its request failed', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'x\n');
    e.finish(1, 5);
    server.failBeforeStore = 1;
    await expect(log.flush()).rejects.toThrow();
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(server.entries.get(0)).toMatchObject({ exitCode: 1, text: 'stdout: x\n', textAtExit: 'stdout: x\n' });
    expect(log.dirty).toBe(false);
  });

  it('does not send the exit code ahead of output written while a request was in flight', async () => {
    const { server, log } = setup();
    const e = log.startEntry('k', []);
    e.write('stdout', 'before\n');
    let open!: () => void;
    server.gate = new Promise<void>((resolve) => (open = resolve));
    const first = log.flush();
    // While the request is in flight the step writes more and ends.
    e.write('stdout', 'during\ntail');
    e.finish(0, 10);
    expect(log.flush()).toBe(first); // concurrent calls share the request in flight
    open();
    await first;
    server.gate = undefined;
    expect(server.requests[0][0].exitCode).toBeUndefined();
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(server.entries.get(0)).toMatchObject({
      exitCode: 0,
      text: 'stdout: before\nstdout: during\nstdout: tail\n',
      textAtExit: 'stdout: before\nstdout: during\nstdout: tail\n',
    });
    expect(log.dirty).toBe(false);
  });

  it('sends several entries in one request, each with its own offset', async () => {
    const { server, log } = setup();
    const a = log.startEntry('a', []);
    a.write('stdout', 'a1\n');
    a.finish(0, 1);
    await log.flush();
    const b = log.startEntry('b', []);
    b.write('stdout', 'b1\n');
    await log.flush();
    expect(server.requests[1].map((u) => u.index)).toEqual([1]); // a is settled and not sent again
    b.write('stdout', 'b2\n');
    const c = log.startEntry('c', []);
    c.write('stderr', 'c1\n');
    await log.flush();
    expect(server.requests[2].map((u) => [u.index, u.offset])).toEqual([
      [1, 'stdout: b1\n'.length],
      [2, 0],
    ]);
    expect([server.text(0), server.text(1), server.text(2)]).toEqual([
      'stdout: a1\n',
      'stdout: b1\nstdout: b2\n',
      'stderr: c1\n',
    ]);
  });

  // Output buffered while the server was away is more than one request may carry (the server takes bodies up to
  // 16 MiB): it must go in several requests, with the exit code only in the last, and no request may end in the
  // middle of a surrogate pair. The two variants put the emoji on either parity, whatever the split size is.
  for (const lead of ['x', 'xy']) {
    it(`splits a large backlog into bounded requests without breaking characters (lead ${JSON.stringify(lead)})`, async () => {
      const { server, log } = setup(50_000_000);
      const e = log.startEntry('big', []);
      const emoji = '\u{1F680}'.repeat(5_000_000); // 10M UTF-16 code units, 20 MB of UTF-8
      e.write('stdout', `${lead}\n`);
      e.write('stdout', emoji);
      e.finish(0, 1);
      for (let i = 0; i < 100 && log.dirty; i++) await log.flush();
      expect(log.dirty).toBe(false);

      expect(server.requests.length).toBeGreaterThan(1);
      for (const request of server.requests) {
        for (const u of request) {
          expect(/^[\uDC00-\uDFFF]/.test(u.out), 'starts with a low surrogate').toBe(false);
          expect(/[\uD800-\uDBFF]$/.test(u.out), 'ends with a high surrogate').toBe(false);
        }
      }
      const withExit = server.requests.flat().filter((u) => u.exitCode !== undefined);
      expect(withExit).toHaveLength(1);
      expect(server.requests.at(-1)!.some((u) => u.exitCode !== undefined)).toBe(true);
      const expected = `stdout: ${lead}\nstdout: ${emoji}\n`;
      expect(server.text(0)!.length).toBe(expected.length);
      expect(server.text(0) === expected).toBe(true);
      expect(server.entries.get(0)!.textAtExit === expected).toBe(true);
    });
  }

  it('redacts registered values in output and commands', async () => {
    const redactor = new Redactor().add('dhj_supersecret', '[job token]');
    const { server, log } = setup(1_000_000, redactor);
    const e = log.startEntry('k', ['curl', '-H', 'Authorization: dhj_supersecret']);
    e.write('stdout', 'token is dhj_supersecret!\n');
    e.write('stderr', 'dhj_supers');
    e.write('stderr', 'ecret\n'); // split across writes but within one line
    await log.flush();
    expect(server.entries.get(0)!.command).toEqual(['curl', '-H', 'Authorization: [job token]']);
    expect(server.text(0)).toBe('stdout: token is [job token]!\nstderr: [job token]\n');
    expect(JSON.stringify(server.requests)).not.toContain('dhj_supersecret');
  });

  it('truncates the log when it passes maxChars, with a marker, and drops the rest', async () => {
    const { server, log } = setup(100);
    const e = log.startEntry('k', []);
    for (let i = 0; i < 20; i++) e.write('stdout', `line number ${i}\n`);
    e.finish(0, 1);
    const other = log.startEntry('later', []);
    other.write('stdout', 'more output\n');
    other.finish(0, 1);
    await log.flush();
    const text = server.text(0)!;
    const lines = text.split('\n').filter(Boolean);
    expect(lines.at(-1)).toMatch(/^stderr: \[dockhand\] log truncated/);
    expect(lines.at(-1)).toContain('100');
    const content = text.slice(0, text.lastIndexOf('stderr: [dockhand]'));
    expect(content.length).toBeLessThanOrEqual(100);
    expect(content).toBe(Array.from({ length: lines.length - 1 }, (_, i) => `stdout: line number ${i}\n`).join(''));
    expect(text.match(/log truncated/g)).toHaveLength(1);
    expect(server.text(1)).toBe('');
    expect(server.entries.get(1)!.exitCode).toBe(0);
  });

  it('goes clean once everything is acknowledged', async () => {
    const { log } = setup();
    const e = log.startEntry('k', []);
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(log.dirty).toBe(false);
    e.write('stdout', 'partial');
    expect(log.dirty).toBe(false); // held, not yet pending
    e.write('stdout', '\n');
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(log.dirty).toBe(false);
    e.finish(0, 1);
    expect(log.dirty).toBe(true);
    await log.flush();
    expect(log.dirty).toBe(false);
  });
});

describe('JobLog sending and backpressure', () => {
  /** A server whose answers wait until `release()`; `requests` counts what it was sent. */
  function heldServer() {
    const server = new FakeServer();
    let open: (() => void)[] = [];
    const send: LogSender = async (updates) => {
      await new Promise<void>((resolve) => open.push(resolve));
      return server.send(updates);
    };
    const release = async (): Promise<void> => {
      const waiting = open;
      open = [];
      for (const go of waiting) go();
      // Lets the answers and what follows them (the next eager request) run.
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    return { server, send, release, waiting: () => open.length };
  }

  const line = (i: number): string => `line ${String(i).padStart(6, '0')} ${'x'.repeat(80)}\n`;

  it('sends as soon as enough output is pending, without waiting for a flush', async () => {
    const server = new FakeServer();
    const log = new JobLog(server.send, new Redactor(), 1e9, { eagerFlushChars: 1000 });
    const e = log.startEntry('k', []);
    e.write('stdout', 'short\n');
    expect(server.requests).toHaveLength(0); // below the threshold: left to the flush timer
    e.write('stdout', `${'y'.repeat(2000)}\n`);
    expect(server.requests).toHaveLength(1);
    await log.flush();
    expect(server.text(0)).toBe(`stdout: short\nstdout: ${'y'.repeat(2000)}\n`);
  });

  it('keeps one request in flight and sends the next one as soon as the answer comes', async () => {
    const held = heldServer();
    const log = new JobLog(held.send, new Redactor(), 1e9, { eagerFlushChars: 1000, highWaterMark: 1e9 });
    const e = log.startEntry('k', []);
    let expected = '';
    for (let i = 0; i < 30; i++) {
      e.write('stdout', line(i));
      expected += `stdout: ${line(i)}`;
    }
    expect(held.waiting()).toBe(1);
    for (let i = 30; i < 60; i++) {
      e.write('stdout', line(i));
      expected += `stdout: ${line(i)}`;
    }
    expect(held.waiting()).toBe(1); // never two at once
    await held.release();
    expect(held.waiting()).toBe(1); // the backlog went at once, not at the next flush
    await held.release();
    expect(held.waiting()).toBe(0);
    expect(held.server.text(0)).toBe(expected);
    const offsets = held.server.requests.map((r) => r[0].offset);
    expect(offsets).toEqual([0, offsets[1]]);
    expect(offsets[1]).toBe(held.server.requests[0][0].out.length);
  });

  it('says when it is full and wakes writers once the server has acknowledged enough', async () => {
    const held = heldServer();
    const log = new JobLog(held.send, new Redactor(), 1e9, { eagerFlushChars: 1000, highWaterMark: 5000 });
    const e = log.startEntry('k', []);
    let writable = true;
    let i = 0;
    while (writable) writable = e.write('stdout', line(i++));
    expect(log.writable).toBe(false);
    let woken = false;
    const waiting = e.whenWritable().then(() => (woken = true));
    await Promise.resolve();
    expect(woken).toBe(false);
    await held.release();
    await waiting;
    expect(woken).toBe(true);
    expect(log.writable).toBe(true);
    e.finish(0, 1);
    for (let n = 0; n < 10 && log.dirty; n++) await Promise.all([log.flush(), held.release()]);
    expect(log.dirty).toBe(false);
    expect(held.server.text(0)).toBe(Array.from({ length: i }, (_, k) => `stdout: ${line(k)}`).join(''));
  });

  it('stays full while the server is down, and keeps every line for when it is back', async () => {
    const server = new FakeServer();
    const log = new JobLog(server.send, new Redactor(), 1e9, { eagerFlushChars: 1000, highWaterMark: 5000 });
    const e = log.startEntry('k', []);
    server.failBeforeStore = 1;
    let i = 0;
    while (e.write('stdout', line(i++)));
    await expect(log.flush()).rejects.toThrow(/connection refused/); // joins the eager request, which fails
    // The eager request failed: no more eager requests (the flush timer retries), and the log stays full.
    const sent = server.requests.length;
    e.write('stdout', line(i++));
    expect(server.requests).toHaveLength(sent);
    expect(log.writable).toBe(false);
    await log.flush(); // the timer's retry succeeds
    while (log.dirty) await log.flush();
    expect(log.writable).toBe(true);
    expect(server.text(0)).toBe(Array.from({ length: i }, (_, k) => `stdout: ${line(k)}`).join(''));
  });

  it('handles lines with carriage returns and secrets inside a large write line by line', async () => {
    const redactor = new Redactor().add('dhj_supersecret', '[job token]');
    const { server, log } = setup(1_000_000, redactor);
    const e = log.startEntry('k', []);
    e.write('stdout', 'plain\n10%\r100%\ntoken dhj_supersecret\nend\n');
    e.write('stderr', 'a\nb\n');
    await log.flush();
    expect(server.text(0)).toBe(
      'stdout: plain\nstdout: 100%\nstdout: token [job token]\nstdout: end\nstderr: a\nstderr: b\n',
    );
  });

  it('truncates inside a large write at the last line that fits', async () => {
    const { server, log } = setup(100);
    const e = log.startEntry('k', []);
    e.write('stdout', Array.from({ length: 20 }, (_, i) => `line number ${i}\n`).join(''));
    await log.flush();
    const text = server.text(0)!;
    const content = text.slice(0, text.lastIndexOf('stderr: [dockhand]'));
    expect(content).toBe(Array.from({ length: 4 }, (_, i) => `stdout: line number ${i}\n`).join(''));
    expect(text.match(/log truncated/g)).toHaveLength(1);
  });
});

describe('Redactor', () => {
  it('ignores values too short to be secrets', () => {
    expect(new Redactor().add('abc', 'X').redact('abcabc')).toBe('abcabc');
  });

  it('replaces longer values first', () => {
    const r = new Redactor().add('secret', '[short]').add('secret-long', '[long]');
    expect(r.redact('secret-long and secret')).toBe('[long] and [short]');
  });
});
