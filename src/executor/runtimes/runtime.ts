// The one interface every sandbox runtime implements (shell now; docker, vm and kubernetes behind it later).
import type { JobSpec, StepSpec } from '../../core/jobSpec.js';
import type { DequeuedJob } from '../../core/protocol.js';
import type { JobLimits } from '../../core/resources.js';
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
  /** Environment for the step: Dockhand's plus the step's own (no host variables; a runtime adds what it needs). */
  env: Record<string, string>;
  /** CPU and memory this job's steps may use (0 = unbounded), already checked against the runtime's limits. */
  limits: JobLimits;
  /**
   * Takes the step's output. False when the job's log holds as much unsent output as it may: the runtime should
   * stop reading the step's output until `outputWritable()` resolves (the step then blocks on its writes, as on a
   * slow terminal), and read on regardless once `signal` aborts, so a stopped step can end.
   */
  output(stream: Stream, text: string): boolean;
  /** Resolves when the log can take more output; at once when it can now. */
  outputWritable(): Promise<void>;
  /** A line from Dockhand itself (image pulls, why a step ended), shown in the step's log. */
  note(line: string): void;
  /** Aborts on cancel, timeout or max runtime; the runtime must stop the step within 2 s. */
  signal: AbortSignal;
}

export interface StepResult {
  exitCode: number;
  /** Why the step ended abnormally, in words (e.g. "killed: out of memory"). */
  reason?: string;
}

/** A step could not be started (its image cannot be pulled, the engine refused the container). */
export class StepStartError extends Error {
  constructor(
    message: string,
    /** false when trying again cannot help (no such image, access denied): the job fails instead of being retried. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** One line of `dockhand executor --check`. */
export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do about it, when not ok. */
  fix?: string;
}

export interface Runtime {
  readonly name: string;
  /** Version of the underlying engine, reported in heartbeats. */
  version(): Promise<string | undefined>;
  /** The command line shown in the step's log entry. */
  describeStep(ctx: Omit<StepContext, 'output' | 'outputWritable' | 'note' | 'signal'>): string[];
  runStep(ctx: StepContext): Promise<StepResult>;
  /** Removes what this executor left behind from earlier runs (containers, VMs, pods); no-op when nothing can leak. */
  cleanupOrphans?(): Promise<void>;
  /** The most one job may use, enforced by this runtime; undefined when it enforces nothing (shell). */
  limits?(): JobLimits;
  /** Self-test for `dockhand executor --check`. */
  check?(): Promise<CheckResult[]>;
  /** Stops background work (janitors) and waits for pending cleanup. */
  close?(): Promise<void>;
}

/** A runtime cannot start on this machine: the message says why and `fix` what to do (shown by `executor --check`). */
export class RuntimeSetupError extends Error {
  constructor(message: string, readonly fix: string) {
    super(`${message}\n  fix: ${fix}`);
  }
}
