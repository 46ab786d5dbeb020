// The one interface every sandbox runtime implements (shell now; docker, vm and kubernetes behind it later).
import type { JobSpec, StepSpec } from '../../core/jobSpec.js';
import type { DequeuedJob } from '../../core/protocol.js';
import type { Stream } from '../jobLog.js';

/** A job's directories on the executor's host, as real paths (no symlinks in them). */
export interface JobDirs {
  /** Per-job directory on the executor's host; removed after the job. */
  root: string;
  /** The workspace the steps share: repository checkout and files. */
  workspace: string;
  /** Step scripts, kept outside the workspace so they do not show up in the checkout. */
  scripts: string;
}

export interface StepContext {
  job: DequeuedJob;
  spec: JobSpec;
  step: StepSpec;
  index: number;
  dirs: JobDirs;
  /** Host path of the step's working directory (its `dir`), created and checked to be inside the workspace. */
  workdir: string;
  /** Host path of the file holding the step's `run` script. */
  scriptPath: string;
  /** Environment for the step: the step's own plus Dockhand's. */
  env: Record<string, string>;
  output(stream: Stream, text: string): void;
  /** Aborts on cancel, timeout or max runtime; the runtime must stop the step within 2 s. */
  signal: AbortSignal;
}

export interface StepResult {
  exitCode: number;
  /** Why the step ended abnormally, in words (e.g. "killed: out of memory"). */
  reason?: string;
}

export interface Runtime {
  readonly name: string;
  /** Version of the underlying engine, reported in heartbeats. */
  version(): Promise<string | undefined>;
  /** The command line shown in the step's log entry. */
  describeStep(ctx: Omit<StepContext, 'output' | 'signal'>): string[];
  runStep(ctx: StepContext): Promise<StepResult>;
  /** Removes what this executor left behind from earlier runs (containers, VMs, pods); no-op when nothing can leak. */
  cleanupOrphans?(): Promise<void>;
}
