// A job may ask for less CPU and memory than an executor allows, never more; 0 means unbounded.
import { describe, expect, it } from 'vitest';
import { effectiveLimits, loosestLimits, resourceIssues } from '../../src/core/resources.js';

const GiB = 2 ** 30;

describe('job resources against executor limits', () => {
  it('accept asking for less or the same, and anything when the limit is 0 (unbounded)', () => {
    expect(resourceIssues({ cpus: 2, memory: GiB }, { cpus: 2, memoryBytes: GiB }, 'x')).toEqual([]);
    expect(resourceIssues({ cpus: 64, memory: 64 * GiB }, { cpus: 0, memoryBytes: 0 }, 'x')).toEqual([]);
    expect(resourceIssues(undefined, { cpus: 1, memoryBytes: GiB }, 'x')).toEqual([]);
  });

  it('name each resource asked for beyond the limit, with the setting that sets it', () => {
    expect(resourceIssues({ cpus: 4, memory: 3 * GiB }, { cpus: 2, memoryBytes: GiB }, "this executor's limits")).toEqual([
      { field: 'resources.cpus', message: "asks for 4 CPUs but this executor's limits allow at most 2 per job (EXECUTOR_JOB_NUM_CPUS)" },
      { field: 'resources.memory', message: "asks for 3Gi but this executor's limits allow at most 1Gi per job (EXECUTOR_JOB_MEMORY)" },
    ]);
  });

  it('give a step the job\'s own request, else the executor\'s limit', () => {
    expect(effectiveLimits({ cpus: 0.5 }, { cpus: 2, memoryBytes: GiB })).toEqual({ cpus: 0.5, memoryBytes: GiB });
    expect(effectiveLimits(undefined, { cpus: 2, memoryBytes: 0 })).toEqual({ cpus: 2, memoryBytes: 0 });
  });

  it('take the loosest limits of a queue\'s executors, and none when one of them enforces nothing', () => {
    expect(loosestLimits([{ jobCpus: 1, jobMemoryBytes: GiB }, { jobCpus: 2, jobMemoryBytes: 0 }])).toEqual({ cpus: 2, memoryBytes: 0 });
    expect(loosestLimits([{ jobCpus: 1, jobMemoryBytes: GiB }, { jobCpus: null, jobMemoryBytes: null }])).toBeUndefined();
    expect(loosestLimits([])).toBeUndefined();
  });
});
