// The shell runtime: steps run as processes on the executor's host, in the job's workspace directory. No isolation
// at all: for development and trusted jobs only. Even so, the checkout runs git without the executor's own git
// config, credential helpers, SSH keys or agent (workspace/checkout.ts).
import os from 'node:os';
import path from 'node:path';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { BackgroundWork } from '../../background.js';
import { processStartTime, runProcess } from '../../process.js';
import { gitEnvironment, type GitRunner } from '../../workspace/checkout.js';
import {
  createHostDirs,
  executorRoot,
  prepareHostWorkspace,
  removeHostDirs,
  stepScriptPath,
  stepWorkdir,
  writeStepScript,
  type HostDirs,
} from '../../workspace/hostWorkspace.js';
import { OwnedDirs } from '../../workspace/ownedDirs.js';
import type { JobSession, JobView, PrepareContext, Runtime, StepIO, StepResult, StepRun } from '../runtime.js';
import type { RuntimeSettings } from '../settings.js';

export const SHELL_RUNTIME_WARNING =
  "The shell runtime gives NO isolation: job steps run as host processes with this executor's user and permissions. " +
  'Use it for development and trusted jobs only.';

/** What a host process needs from the executor's own environment; nothing else (no tokens) leaks into steps. */
const HOST_ENV_KEYS = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'];

type Settings = Pick<RuntimeSettings, 'executorName' | 'workspaceRoot' | 'keepWorkspaces' | 'allowLocalRepositories'>;

/** The running step's process group, with its start time, so a restarted executor stops what it left running. */
const STEP_PID_FILE = 'step.pid';

export class ShellRuntime implements Runtime {
  readonly name = 'shell';
  private readonly background = new BackgroundWork();
  /** Job directories of this process's sessions: the janitor leaves them alone. */
  private readonly jobDirs = new OwnedDirs();

  constructor(
    private readonly settings: Settings,
    private readonly log: Logger,
  ) {}

  /** The host's kernel is what steps run on. */
  async version(): Promise<string | undefined> {
    return `${os.type()} ${os.release()}`;
  }

  private root(): Promise<string> {
    return executorRoot(this.settings.workspaceRoot, this.settings.executorName);
  }

  async open(job: JobView): Promise<JobSession> {
    const dirs = await this.jobDirs.make(
      async () => createHostDirs(await this.root(), `job-${job.id}-`),
      (d) => d.root,
    );
    return new ShellSession(job, dirs, this.settings, () => {
      if (this.settings.keepWorkspaces) return void this.jobDirs.release(dirs.root);
      this.background.run(
        () => removeHostDirs(dirs).finally(() => this.jobDirs.release(dirs.root)),
        (err) => this.log.warn({ jobId: job.id, err: err.message }, 'could not remove a job directory'),
      );
    });
  }

  /**
   * What an executor of this name left behind when it died (kill -9, a crash): its steps' process groups, which
   * outlive it, and its job directories. Kept workspaces stay (EXECUTOR_KEEP_WORKSPACES); their steps still go.
   */
  async cleanupOrphans(): Promise<void> {
    const root = await this.root();
    const names = (await readdir(root).catch(() => [] as string[])).filter((n) => n.startsWith('job-'));
    const removed: string[] = [];
    for (const name of names) {
      const dir = path.join(root, name);
      if (this.jobDirs.spares(dir)) continue;
      const [pid, started] = (await readFile(path.join(dir, STEP_PID_FILE), 'utf8').catch(() => '')).split(' ');
      // The same pid and start time: the very process the step was, not a later one that got its pid.
      if (pid && started && (await processStartTime(Number(pid))) === started.trim()) {
        try {
          process.kill(-Number(pid), 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
      if (this.settings.keepWorkspaces) continue;
      await rm(dir, { recursive: true, force: true, maxRetries: 3 });
      removed.push(dir);
    }
    if (removed.length) this.log.info({ removed }, 'removed orphaned job directories');
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
    private readonly closed: () => void,
  ) {}

  async prepare(ctx: PrepareContext): Promise<void> {
    if (!this.job.spec.repository && !this.job.spec.files) return;
    // git's home: outside the workspace, empty, gone with the job.
    const home = path.join(this.dirs.root, 'git-home');
    await mkdir(home);
    const env = gitEnvironment({
      home,
      path: process.env.PATH ?? '/usr/bin:/bin',
      allowLocal: this.settings.allowLocalRepositories,
      repository: this.job.spec.repository,
      secrets: this.job.secrets,
    });
    const git =
      (cwd: string): GitRunner =>
      async (args, io) =>
        (await runProcess(['git', ...args], { cwd, env, output: io.output, signal: io.signal })).exitCode;
    await prepareHostWorkspace(this.job.spec, this.dirs, git, {
      ...ctx,
      allowLocalRepositories: this.settings.allowLocalRepositories,
    });
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
    const pidFile = path.join(this.dirs.root, STEP_PID_FILE);
    let recorded: Promise<void> = Promise.resolve();
    const result = await runProcess(this.describeStep(run), {
      cwd,
      env,
      output: io.output,
      outputWritable: io.outputWritable,
      signal: io.signal,
      onSpawn: (pid) => {
        recorded = processStartTime(pid).then((started) =>
          started ? writeFile(pidFile, `${pid} ${started}`) : undefined,
        );
      },
    });
    await recorded.then(() => rm(pidFile, { force: true })).catch(() => undefined);
    return { exitCode: result.exitCode, reason: result.signal ? `killed by ${result.signal}` : undefined };
  }

  async close(): Promise<void> {
    this.closed();
  }
}
