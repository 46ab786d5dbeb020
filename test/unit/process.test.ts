import { describe, it, expect } from 'vitest';
import os from 'node:os';
import { JobLog, type LogSender } from '../../src/executor/jobLog.js';
import { Redactor } from '../../src/executor/redactor.js';
import { runProcess } from '../../src/executor/process.js';

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };

describe('runProcess with a job log that applies backpressure', () => {
  it('stops reading a fast step while the log is full, and loses nothing', async () => {
    let stored = 0;
    const send: LogSender = async (updates) => {
      await new Promise((resolve) => setTimeout(resolve, 5)); // a slow server
      for (const u of updates) stored += u.out.length;
      return { entries: updates.map((u) => ({ index: u.index, length: u.offset + u.out.length })) };
    };
    const highWaterMark = 100_000;
    const log = new JobLog(send, new Redactor(), 1e9, { highWaterMark, eagerFlushChars: 10_000 });
    const entry = log.startEntry('k', []);
    // `yes` blocks in write(2) when its pipe is full: 10 MB of "y\n", 5 times the log's characters once prefixed.
    let given = 0;
    let maxHeld = 0;
    const result = await runProcess(['sh', '-c', 'yes | head -c 10000000'], {
      cwd: os.tmpdir(),
      env,
      signal: new AbortController().signal,
      outputWritable: entry.whenWritable,
      output: (stream, text) => {
        given += text.length;
        maxHeld = Math.max(maxHeld, given - stored / 5);
        return entry.write(stream, text);
      },
    });
    expect(result.exitCode).toBe(0);
    entry.finish(0, 1);
    while (log.dirty) await log.flush();
    expect(stored).toBe(50_000_000);
    // At most the high-water mark (in raw characters), plus what one read brings past it.
    expect(maxHeld).toBeLessThan(highWaterMark / 5 + 256 * 1024);
  });

  it('reads on when the step is stopped, so a step held back by a server that is down still ends', async () => {
    const send: LogSender = () => new Promise(() => undefined); // never answers
    const log = new JobLog(send, new Redactor(), 1e9, { highWaterMark: 10_000, eagerFlushChars: 1_000 });
    const entry = log.startEntry('k', []);
    const stop = new AbortController();
    const running = runProcess(['sh', '-c', 'yes'], {
      cwd: os.tmpdir(),
      env,
      signal: stop.signal,
      output: entry.write,
      outputWritable: entry.whenWritable,
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(log.writable).toBe(false);
    stop.abort();
    const result = await running;
    expect(result.signal).not.toBeNull();
  });
});
