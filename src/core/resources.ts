// Per-job CPU, memory and disk: what a job asks for (spec.resources) against what an executor allows one job
// (EXECUTOR_JOB_NUM_CPUS, EXECUTOR_JOB_MEMORY, EXECUTOR_JOB_DISK, where 0 means unbounded). A job may ask for
// less, never more.
import type { FieldIssue, JobSpec } from './jobSpec.js';
import type { ExecutorResources } from './protocol.js';
import { formatSize } from './units.js';

export interface JobLimits {
  /** CPUs a job may use; 0 = unbounded. */
  cpus: number;
  /** Bytes of memory a job may use; 0 = unbounded. */
  memoryBytes: number;
  /** Bytes of disk a job's workspace may fill; 0 = unbounded. */
  diskBytes: number;
}

/** What the job asks for beyond `limits`, one issue per resource; `where` says whose limits they are. */
export function resourceIssues(
  resources: JobSpec['resources'],
  limits: ExecutorResources,
  where: string,
): FieldIssue[] {
  const issues: FieldIssue[] = [];
  if (resources?.cpus !== undefined && limits.cpus && resources.cpus > limits.cpus) {
    issues.push({
      field: 'resources.cpus',
      message: `asks for ${resources.cpus} CPUs but ${where} allow at most ${limits.cpus} per job (EXECUTOR_JOB_NUM_CPUS)`,
    });
  }
  if (resources?.memory !== undefined && limits.memoryBytes && resources.memory > limits.memoryBytes) {
    issues.push({
      field: 'resources.memory',
      message: `asks for ${formatSize(resources.memory)} but ${where} allow at most ${formatSize(limits.memoryBytes)} per job (EXECUTOR_JOB_MEMORY)`,
    });
  }
  if (resources?.disk !== undefined && limits.diskBytes && resources.disk > limits.diskBytes) {
    issues.push({
      field: 'resources.disk',
      message: `asks for ${formatSize(resources.disk)} but ${where} allow at most ${formatSize(limits.diskBytes)} per job (EXECUTOR_JOB_DISK)`,
    });
  }
  return issues;
}

/** The limits a step container gets: the job's own request where it made one, else the executor's limit. */
export function effectiveLimits(resources: JobSpec['resources'], limits: JobLimits): JobLimits {
  return {
    cpus: resources?.cpus ?? limits.cpus,
    memoryBytes: resources?.memory ?? limits.memoryBytes,
    diskBytes: resources?.disk ?? limits.diskBytes,
  };
}

/**
 * The largest limits among executors (0 = unbounded wins); undefined when any of them enforces none. An executor
 * from before disk limits reports CPU and memory only (null disk): it may run any disk size, so the disk is unbounded.
 */
export function loosestLimits(
  executors: { jobCpus: number | null; jobMemoryBytes: number | null; jobDiskBytes: number | null }[],
): ExecutorResources | undefined {
  if (executors.length === 0 || executors.some((e) => e.jobCpus === null || e.jobMemoryBytes === null))
    return undefined;
  const loosest = (values: number[]): number => (values.includes(0) ? 0 : Math.max(...values));
  return {
    cpus: loosest(executors.map((e) => e.jobCpus!)),
    memoryBytes: loosest(executors.map((e) => e.jobMemoryBytes!)),
    diskBytes: loosest(executors.map((e) => e.jobDiskBytes ?? 0)),
  };
}
