// The shell runtime: steps run as processes on the executor's host, in the job's workspace directory. No isolation
// at all: for development and trusted jobs only. Even so, the checkout runs git without the executor's own git
// config, credential helpers, SSH keys or agent (workspace/checkout.ts).
import os from 'node:os';
import path from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { BackgroundWork } from '../../background.js';
import { runProcess } from '../../process.js';
import { gitEnvironment, type GitRunner } from '../../workspace/checkout.js';
import {
  createHostDirs, prepareHostWorkspace, removeHostDirs, stepScriptPath, stepWorkdir, writeStepScript, type HostDirs,
} from '../../workspace/hostWorkspace.js';
import type { JobSession, JobView, PrepareContext, Runtime, StepIO, StepResult, StepRun } from '../runtime.js';
import type { RuntimeSettings } from '../settings.js';

export const SHELL_RUNTIME_WARNING =
  'The shell runtime gives NO isolation: job steps run as host processes with this executor\'s user and permissions. ' +
  'Use it for development and trusted jobs only.';

/** What a host process needs from the executor's own environment; nothing else (no tokens) leaks into steps. */
const HOST_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

type Settings = Pick<RuntimeSettings, 'workspaceRoot' | 'keepWorkspaces' | 'allowLocalRepositories'>;

export class ShellRuntime implements Runtime {
  readonly name = 'shell';
  private readonly background = new BackgroundWork();

  constructor(
    private readonly settings: Settings,
    private readonly log: Logger,
  ) {}

  /** The host's kernel is what steps run on. */
  async version(): Promise<string | undefined> {
    return `${os.type()} ${os.release()}`;
  }

  async open(job: JobView): Promise<JobSession> {
    const dirs = await createHostDirs(this.settings.workspaceRoot, `dockhand-job-${job.id}-`);
    return new ShellSession(job, dirs, this.settings, (task) =>
      this.background.run(task, (err) => this.log.warn({ jobId: job.id, err: err.message }, 'could not remove a job directory')),
    );
  }

  async close(): Promise<void> {
    await this.background.settle();
  }
}

class ShellSession implements JobSession {
  constructor(
    private readonly job: JobView,
    private readonly dirs: HostDirs,
    private readonly settings: Settings,
    private readonly later: (task: () => Promise<void>) => void,
  ) {}

  async prepare(ctx: PrepareContext): Promise<void> {
    if (!this.job.spec.repository && !this.job.spec.files) return;
    // git's home: outside the workspace, empty, gone with the job.
    const home = path.join(this.dirs.root, 'git-home');
    await mkdir(home);
    const env = gitEnvironment({ home, path: process.env.PATH ?? '/usr/bin:/bin', allowLocal: this.settings.allowLocalRepositories });
    const git = (cwd: string): GitRunner => async (args, io) => (await runProcess(['git', ...args], { cwd, env, output: io.output, signal: io.signal })).exitCode;
    await prepareHostWorkspace(this.job.spec, this.dirs, git, { ...ctx, allowLocalRepositories: this.settings.allowLocalRepositories });
  }

  describeStep(run: StepRun): string[] {
    return ['/bin/sh', '-e', stepScriptPath(this.dirs, run.index)];
  }

  async runStep(run: StepRun, io: StepIO): Promise<StepResult> {
    const cwd = await stepWorkdir(this.dirs, run.step.dir);
    await writeStepScript(this.dirs, run.index, run.step.run);
    const env: Record<string, string> = {};
    for (const key of HOST_ENV_KEYS) if (process.env[key]) env[key] = process.env[key]!;
    Object.assign(env, { DOCKHAND_WORKSPACE: this.dirs.workspace }, run.env);
    const result = await runProcess(this.describeStep(run), { cwd, env, output: io.output, outputWritable: io.outputWritable, signal: io.signal });
    return { exitCode: result.exitCode, reason: result.signal ? `killed by ${result.signal}` : undefined };
  }

  async close(): Promise<void> {
    if (!this.settings.keepWorkspaces) this.later(() => removeHostDirs(this.dirs));
  }
}
