// Runs one job attempt on this executor: opens a session in the runtime, prepares its workspace, runs the steps in
// order under their timeouts, and turns how it went into the report the server should get. The runtime sees the
// job without its token (JobView); this file never talks to the server.
import { failure, type AttemptReport, type FailureReason } from '../core/failureReasons.js';
import type { DequeuedJob } from '../core/protocol.js';
import { effectiveLimits, resourceIssues } from '../core/resources.js';
import { formatDuration } from '../core/units.js';
import type { ExecutorConfig } from './config.js';
import type { JobLog } from './jobLog.js';
import {
  JobFailure,
  stepEnv,
  type JobSession,
  type JobView,
  type Runtime,
  type StepResult,
} from './runtimes/runtime.js';

/** Why a running job is being stopped. */
export type StopReason = 'canceled' | 'abandoned' | 'shutdown';

export interface RunJobArgs {
  job: DequeuedJob;
  runtime: Runtime;
  config: Pick<ExecutorConfig, 'maxRuntimePerJobMs'>;
  log: JobLog;
  /** Aborted with a StopReason by the agent. */
  stop: AbortSignal;
}

/** The runtime's view of a job: everything but the token, with the limits its steps get. */
export function jobView(job: DequeuedJob, limits: JobView['limits'], maxRuntimeMs?: number): JobView {
  return {
    id: job.id,
    attempt: job.attempt,
    queue: job.queue,
    namespace: job.namespace,
    spec: job.spec,
    secrets: job.secrets ?? {},
    dockerAuthConfig: job.dockerAuthConfig,
    limits,
    maxRuntimeMs,
  };
}

/** Returns the report to send, or undefined when the job was abandoned (the server no longer wants it). */
export async function runJob({ job, runtime, config, log, stop }: RunJobArgs): Promise<AttemptReport | undefined> {
  const spec = job.spec;
  // A job that asks for more than this executor allows fails at once, saying so (the server refuses such jobs at
  // submit time when it knows the queue's executors; this catches the rest).
  const runtimeLimits = runtime.limits?.();
  const tooBig = runtimeLimits ? resourceIssues(spec.resources, runtimeLimits, "this executor's limits") : [];
  if (tooBig.length) return failure('resources_exceeded', tooBig.map((i) => `${i.field} ${i.message}`).join('; '));
  // Nothing to run and nothing to prepare: no session is needed either.
  if (spec.steps.length === 0 && !spec.repository && !spec.files) return { kind: 'complete' };
  const maxRuntimeMs = Math.min(spec.maxRuntime ?? Infinity, config.maxRuntimePerJobMs);
  const view = jobView(
    job,
    effectiveLimits(spec.resources, runtimeLimits ?? { cpus: 0, memoryBytes: 0, diskBytes: 0 }),
    maxRuntimeMs,
  );

  const overtime = AbortSignal.timeout(maxRuntimeMs);
  const jobSignal = AbortSignal.any([stop, overtime]);
  /** The report for a job its runner stopped (cancel, maximum runtime, shutdown); undefined once abandoned. */
  const stopped = (): AttemptReport | undefined => {
    if (overtime.aborted && !stop.aborted)
      return failure('job_timeout', `job exceeded its maximum runtime of ${formatDuration(maxRuntimeMs)}`);
    const reason = stop.reason as StopReason;
    if (reason === 'canceled') return failure('canceled', 'canceled by a user');
    if (reason === 'shutdown')
      return failure('executor_shutdown', 'the executor was shut down while the job was running');
    return undefined;
  };

  let session: JobSession;
  try {
    session = await runtime.open(view, jobSignal);
  } catch (err) {
    if (jobSignal.aborted) return stopped();
    return failureOf(err, 'runtime_unavailable', `the ${runtime.name} runtime could not start the job`);
  }
  try {
    try {
      await session.prepare({ log, signal: jobSignal });
    } catch (err) {
      if (jobSignal.aborted) return stopped();
      return failureOf(err, 'system_failure', 'preparing the workspace failed');
    }

    for (const [index, step] of spec.steps.entries()) {
      if (jobSignal.aborted) return stopped();
      const run = { index, step, env: stepEnv(view, step) };
      const entry = log.startEntry(`step.${step.key}`, session.describeStep(run));
      const timeout = step.timeout ? AbortSignal.timeout(step.timeout) : undefined;
      const started = Date.now();
      let result: StepResult | JobFailure;
      try {
        result = await session.runStep(run, {
          output: entry.write,
          outputWritable: entry.whenWritable,
          note: entry.note,
          signal: timeout ? AbortSignal.any([jobSignal, timeout]) : jobSignal,
        });
      } catch (err) {
        // The step could not be started (or its runtime failed under it): the log says why, with exit code 127.
        result = err instanceof JobFailure ? err : new JobFailure('system_failure', (err as Error).message);
        entry.note(`[dockhand] could not run the step: ${result.message}`);
        entry.finish(127, Date.now() - started);
        if (jobSignal.aborted) return stopped();
        // A dir that leads out of the workspace is the job's own content, not a step that failed to start.
        const what =
          result.reason === 'invalid_workspace' ? result.message : `could not run the step: ${result.message}`;
        return failure(result.reason, `step ${step.key}: ${what}`);
      }
      if (result.reason) entry.note(`[dockhand] ${result.reason}`);
      entry.finish(result.exitCode, Date.now() - started);
      if (jobSignal.aborted) return stopped();
      if (timeout?.aborted)
        return failure('step_timeout', `step ${step.key} timed out after ${formatDuration(step.timeout!)}`);
      if (result.exitCode !== 0) {
        return failure(
          result.failure ?? 'script_failure',
          `step ${step.key} failed with exit code ${result.exitCode}${result.reason ? ` (${result.reason})` : ''}`,
        );
      }
    }
    return { kind: 'complete' };
  } finally {
    await session.close().catch(() => undefined);
  }
}

/** A typed failure keeps its reason; anything else is the runtime's or the executor's own failure. */
function failureOf(err: unknown, otherwise: FailureReason, what: string): AttemptReport {
  if (err instanceof JobFailure) return failure(err.reason, `${what}: ${err.message}`);
  return failure(otherwise, `${what}: ${(err as Error).message}`);
}
