// Runs one job attempt on this executor: workspace, steps in order, and the report the server should get.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { DequeuedJob } from '../core/protocol.js';
import { formatDuration } from '../core/units.js';
import { failure } from '../core/failureReasons.js';
import type { FinalReport } from './apiClient.js';
import type { ExecutorConfig } from './config.js';
import type { JobLog } from './jobLog.js';
import { effectiveLimits, resourceIssues } from '../core/resources.js';
import { StepStartError, type Runtime } from './runtimes/runtime.js';
import { WorkspaceError, checkoutRepository, confinedDirectory, createJobDirs, removeJobDirs, writeFiles } from './workspace.js';

/** Why a running job is being stopped. */
export type StopReason = 'canceled' | 'abandoned' | 'shutdown';

export interface RunJobArgs {
  job: DequeuedJob;
  runtime: Runtime;
  config: Pick<ExecutorConfig, 'maxRuntimePerJobMs' | 'keepWorkspaces' | 'workspaceRoot'>;
  log: JobLog;
  /** Aborted with a StopReason by the agent. */
  stop: AbortSignal;
}

/** Returns the report to send, or undefined when the job was abandoned (the server no longer wants it). */
export async function runJob({ job, runtime, config, log, stop }: RunJobArgs): Promise<FinalReport | undefined> {
  const spec = job.spec;
  // A job that asks for more than this executor allows fails at once, saying so (the server refuses such jobs at
  // submit time when it knows the queue's executors; this catches the rest).
  const runtimeLimits = runtime.limits?.();
  const tooBig = runtimeLimits ? resourceIssues(spec.resources, runtimeLimits, 'this executor\'s limits') : [];
  if (tooBig.length) return failure('resources_exceeded', tooBig.map((i) => `${i.field} ${i.message}`).join('; '));
  const limits = effectiveLimits(spec.resources, runtimeLimits ?? { cpus: 0, memoryBytes: 0 });
  // Nothing to run and nothing to prepare: no workspace is needed either.
  if (spec.steps.length === 0 && !spec.repository && !spec.files) return { kind: 'complete' };

  const maxRuntimeMs = Math.min(spec.maxRuntime ?? Infinity, config.maxRuntimePerJobMs);
  const overtime = AbortSignal.timeout(maxRuntimeMs);
  const jobSignal = AbortSignal.any([stop, overtime]);
  const stopped = (): FinalReport | undefined => {
    if (overtime.aborted && !stop.aborted) return failure('job_timeout', `job exceeded its maximum runtime of ${formatDuration(maxRuntimeMs)}`);
    const reason = stop.reason as StopReason;
    if (reason === 'canceled') return failure('canceled', 'canceled by a user');
    if (reason === 'shutdown') return failure('executor_shutdown', 'the executor was shut down while the job was running');
    return undefined;
  };

  const dirs = await createJobDirs(config.workspaceRoot, job.id);
  try {
    try {
      await checkoutRepository(spec, dirs, log, jobSignal);
      await writeFiles(spec, dirs, log);
    } catch (err) {
      if (jobSignal.aborted) return stopped();
      if (err instanceof WorkspaceError) return failure('checkout_failure', `preparing the workspace failed: ${err.message}`);
      throw err;
    }

    for (const [index, step] of spec.steps.entries()) {
      if (jobSignal.aborted) return stopped();
      let workdir: string;
      try {
        workdir = await confinedDirectory(dirs.workspace, step.dir ?? '.');
      } catch (err) {
        // The job's own content (a symlink in its checkout) is at fault: running it again would not help.
        if (err instanceof WorkspaceError) return failure('invalid_workspace', `step ${step.key}: dir ${err.message}`);
        throw err;
      }
      const scriptPath = path.join(dirs.scripts, `step-${index + 1}.sh`);
      await writeFile(scriptPath, step.run.endsWith('\n') ? step.run : `${step.run}\n`, { mode: 0o755 });
      const env = {
        CI: 'true',
        DOCKHAND: 'true',
        DOCKHAND_JOB_ID: String(job.id),
        DOCKHAND_JOB_ATTEMPT: String(job.attempt),
        DOCKHAND_QUEUE: job.queue,
        DOCKHAND_STEP_KEY: step.key,
        ...step.env,
        // The job's secrets, by name, in every step (the spec refuses a step env that names one of them).
        ...job.secrets,
      };
      const stepCtx = { job, spec, step, index, dirs, workdir, scriptPath, env, limits };
      const entry = log.startEntry(`step.${step.key}`, runtime.describeStep(stepCtx));
      const timeout = step.timeout ? AbortSignal.timeout(step.timeout) : undefined;
      const started = Date.now();
      const result = await runtime
        .runStep({
          ...stepCtx, output: entry.write, outputWritable: entry.whenWritable, note: entry.note,
          signal: timeout ? AbortSignal.any([jobSignal, timeout]) : jobSignal,
        })
        .catch((err: Error) => ({
          exitCode: 127, reason: `could not run the step: ${err.message}`, failedToStart: true,
          retryable: !(err instanceof StepStartError) || err.retryable,
        }));
      if (result.reason) entry.note(`[dockhand] ${result.reason}`);
      entry.finish(result.exitCode, Date.now() - started);
      if (jobSignal.aborted) return stopped();
      if (timeout?.aborted) return failure('step_timeout', `step ${step.key} timed out after ${formatDuration(step.timeout!)}`);
      if ('failedToStart' in result) return failure(result.retryable ? 'runtime_unavailable' : 'invalid_step', `step ${step.key}: ${result.reason}`);
      if (result.exitCode !== 0) {
        return failure(result.reason === 'killed: out of memory' ? 'out_of_memory' : 'script_failure', `step ${step.key} failed with exit code ${result.exitCode}${result.reason ? ` (${result.reason})` : ''}`);
      }
    }
    return { kind: 'complete' };
  } finally {
    if (!config.keepWorkspaces) await removeJobDirs(dirs).catch(() => undefined);
  }
}
