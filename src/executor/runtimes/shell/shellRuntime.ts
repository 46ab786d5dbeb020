// The shell runtime: steps run as processes on the executor's host, in the job's workspace. No isolation at all:
// for development and trusted jobs only.
import os from 'node:os';
import { runProcess } from '../../process.js';
import type { Runtime, StepContext, StepResult } from '../runtime.js';

export const SHELL_RUNTIME_WARNING =
  'The shell runtime gives NO isolation: job steps run as host processes with this executor\'s user and permissions. ' +
  'Use it for development and trusted jobs only.';

/** What a host process needs from the executor's own environment; nothing else (no tokens) leaks into steps. */
const HOST_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

export class ShellRuntime implements Runtime {
  readonly name = 'shell';

  /** The host's kernel is what steps run on. */
  async version(): Promise<string | undefined> {
    return `${os.type()} ${os.release()}`;
  }

  describeStep(ctx: Pick<StepContext, 'scriptPath'>): string[] {
    return ['/bin/sh', '-e', ctx.scriptPath];
  }

  async runStep(ctx: StepContext): Promise<StepResult> {
    const env: Record<string, string> = {};
    for (const key of HOST_ENV_KEYS) if (process.env[key]) env[key] = process.env[key]!;
    Object.assign(env, { DOCKHAND_WORKSPACE: ctx.dirs.workspace }, ctx.env);
    const result = await runProcess(this.describeStep(ctx), {
      cwd: ctx.workdir, env, output: ctx.output, outputWritable: ctx.outputWritable, signal: ctx.signal,
    });
    return { exitCode: result.exitCode, reason: result.signal ? `killed by ${result.signal}` : undefined };
  }
}
