// Running a host command in its own process group, streaming its output, and stopping the whole group.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type { Stream } from './jobLog.js';

/** After SIGTERM, a step gets this long before SIGKILL: well inside the 2 s promised for cancel. */
export const KILL_GRACE_MS = 1_000;

export interface ProcessResult {
  exitCode: number;
  signal: NodeJS.Signals | null;
}

export function runProcess(
  argv: string[],
  opts: {
    cwd: string;
    env: Record<string, string>;
    /** False asks for a pause: the process's output is not read until `outputWritable` resolves. */
    output(stream: Stream, text: string): boolean | void;
    outputWritable?(): Promise<void>;
    signal: AbortSignal;
    /** Told the process id (which is also its process group's) once it runs. */
    onSpawn?(pid: number): void;
  },
): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid && opts.onSpawn) opts.onSpawn(child.pid);
    const group = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid) process.kill(-child.pid, sig);
      } catch {
        // the group is already gone
      }
    };
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = (): void => {
      group('SIGTERM');
      killTimer = setTimeout(() => group('SIGKILL'), KILL_GRACE_MS);
    };
    if (opts.signal.aborted) onAbort();
    else opts.signal.addEventListener('abort', onAbort, { once: true });
    // Backpressure: while the log is full, neither pipe is read, so the process blocks on its next write to a full
    // pipe. A stopped process is read on regardless: its streams must end for it to be reaped.
    let paused = false;
    const resume = (): void => {
      if (!paused) return;
      paused = false;
      child.stdout.resume();
      child.stderr.resume();
    };
    const take = (stream: Stream, text: string): void => {
      if (opts.output(stream, text) !== false || !opts.outputWritable || paused || opts.signal.aborted) return;
      paused = true;
      child.stdout.pause();
      child.stderr.pause();
      void opts.outputWritable().then(resume);
    };
    opts.signal.addEventListener('abort', resume, { once: true });
    child.stdout.setEncoding('utf8').on('data', (d: string) => take('stdout', d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => take('stderr', d));
    // Background processes the step left behind would hold its output open and outlive it: end them too.
    child.on('exit', () => group('SIGKILL'));
    child.on('error', (err) => {
      opts.signal.removeEventListener('abort', onAbort);
      opts.signal.removeEventListener('abort', resume);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(killTimer);
      opts.signal.removeEventListener('abort', onAbort);
      opts.signal.removeEventListener('abort', resume);
      resolve({ exitCode: code ?? (signal ? 128 + os.constants.signals[signal] : 1), signal });
    });
  });
}

/** When process `pid` started, in clock ticks since boot (/proc/PID/stat field 22): with the pid, it names one process for good. */
export async function processStartTime(pid: number): Promise<string | undefined> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}
