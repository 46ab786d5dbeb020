// The seam every sandbox runtime implements, cut at the job: a runtime opens a session for one job attempt; the
// session owns the job's workspace (a host directory, a disk image in a VM, a volume in a pod), prepares it, runs
// the steps one at a time and is closed whatever happens. The job runner (jobRunner.ts) keeps the step loop,
// the timeouts and the report; the agent keeps everything that talks to the server, the job token included.
import type { DockerAuthConfig } from '../../core/dockerAuthConfig.js';
import type { FailureReason } from '../../core/failureReasons.js';
import type { StepSpec } from '../../core/jobSpec.js';
import type { DequeuedJob } from '../../core/protocol.js';
import type { JobLimits } from '../../core/resources.js';
import type { EntryHandle, Stream } from '../jobLog.js';

/**
 * What a runtime sees of a job attempt: what it must run and inject, and nothing that talks to the server. The job
 * token is not here: a step that could read it could speak for the attempt.
 */
export interface JobView {
  id: number;
  attempt: number;
  queue: string;
  namespace: string;
  spec: DequeuedJob['spec'];
  /** The secrets' values by name, set in every step's env (the job's log masks them). */
  secrets: Record<string, string>;
  /** Registry credentials given with the job; the first source for its image pulls. */
  dockerAuthConfig?: DockerAuthConfig;
  /** What each step may use (0 = unbounded): the job's request, else the executor's limit. */
  limits: JobLimits;
  /** How long the whole attempt may run (the job's maxRuntime, capped by the executor's); a runtime may enforce it too. */
  maxRuntimeMs?: number;
}

/** Where a session writes its setup entries (`setup.git.*`, `setup.files`): the job's log. */
export interface SetupLog {
  startEntry(key: string, command: string[]): EntryHandle;
}

export interface PrepareContext {
  log: SetupLog;
  /** Aborts on cancel, maximum runtime or shutdown. */
  signal: AbortSignal;
}

/** One step as the session runs it. */
export interface StepRun {
  index: number;
  step: StepSpec;
  /** The step's environment: Dockhand's variables, the step's own and the secrets (see stepEnv). */
  env: Record<string, string>;
}

export interface StepIO {
  /**
   * Takes the step's output. False when the job's log holds as much unsent output as it may: stop reading the
   * step's output until `outputWritable()` resolves (the step then blocks on its writes, as on a slow terminal),
   * and read on regardless once `signal` aborts, so a stopped step can end.
   */
  output(stream: Stream, text: string): boolean;
  outputWritable(): Promise<void>;
  /** A line from Dockhand itself (image pulls, why a step ended), shown in the step's log. */
  note(line: string): void;
  /** Aborts on cancel, step timeout, maximum runtime, abandonment and shutdown: stop the step within 2 s. */
  signal: AbortSignal;
}

export interface StepResult {
  exitCode: number;
  /** Why the step ended abnormally, in words (e.g. "killed: out of memory"). */
  reason?: string;
  /** The failure reason this exit amounts to, when it is not the step's own (out of memory, out of disk). */
  failure?: FailureReason;
}

export interface JobSession {
  /** Checks the repository out and writes the job's files into the workspace (with the shared code in workspace/). */
  prepare(ctx: PrepareContext): Promise<void>;
  /** The command line shown in the step's log entry. */
  describeStep(run: StepRun): string[];
  runStep(run: StepRun, io: StepIO): Promise<StepResult>;
  /** Releases everything the session holds; called once, whatever happened. Slow cleanup may go on in the background until the runtime's close(). */
  close(): Promise<void>;
}

/**
 * A job attempt cannot go on, for a reason with a type: the runner reports it as such (retried or failed as
 * core/failureReasons.ts says). Sessions throw it from open, prepare and runStep.
 */
export class JobFailure extends Error {
  constructor(
    readonly reason: FailureReason,
    message: string,
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
  /** The most one job may use, enforced by this runtime; undefined when it enforces nothing (shell). */
  limits?(): JobLimits;
  /** Credentials the runtime holds of its own (registry logins): masked in every job's output and the executor's log. */
  secrets?(): string[];
  /** Opens a session for one job attempt: its sandbox and an empty workspace. Throws a JobFailure when it cannot. */
  open(job: JobView, signal: AbortSignal): Promise<JobSession>;
  /** Removes what this executor left behind from earlier runs (containers, mounts, VMs, pods). */
  cleanupOrphans?(): Promise<void>;
  /** Self-test for `dockhand executor --check`. */
  check?(): Promise<CheckResult[]>;
  /** Stops background work (janitors) and waits for pending cleanup. */
  close?(): Promise<void>;
}

/** A runtime cannot start on this machine: the message says why and `fix` what to do (shown by `executor --check`). */
export class RuntimeSetupError extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(`${message}\n  fix: ${fix}`);
  }
}

/** The environment every runtime gives a step: Dockhand's variables, the step's own, then the job's secrets. */
export function stepEnv(job: JobView, step: StepSpec): Record<string, string> {
  return {
    CI: 'true',
    DOCKHAND: 'true',
    DOCKHAND_JOB_ID: String(job.id),
    DOCKHAND_JOB_ATTEMPT: String(job.attempt),
    DOCKHAND_QUEUE: job.queue,
    DOCKHAND_STEP_KEY: step.key,
    ...step.env,
    // By name, in every step (the spec refuses a step env that names one of them).
    ...job.secrets,
  };
}
