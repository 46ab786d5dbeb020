// The shell runtime: steps run as processes on the executor's host, in the job's workspace. No isolation at all:
// for development and trusted jobs only.
import os from 'node:os';
import { runProcess } from '../../process.js';
import type { Runtime, StepContext, StepResult } from '../runtime.js';

export const SHELL_RUNTIME_WARNING =
  'The shell runtime gives NO isolation: job steps run as host processes with this executor\'s user and permissions. ' +
  'Use it for development and trusted jobs only.';

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
    const result = await runProcess(this.describeStep(ctx), { cwd: ctx.workdir, env: ctx.env, output: ctx.output, signal: ctx.signal });
    return { exitCode: result.exitCode, reason: result.signal ? `killed by ${result.signal}` : undefined };
  }
}
