// A job may ask for less CPU, memory and disk than an executor allows, never more; 0 means unbounded.
import { describe, expect, it } from 'vitest';
import { effectiveLimits, loosestLimits, resourceIssues } from '../../src/core/resources.js';

const GiB = 2 ** 30;

describe('job resources against executor limits', () => {
  it('accept asking for less or the same, and anything when the limit is 0 (unbounded)', () => {
    expect(
      resourceIssues({ cpus: 2, memory: GiB, disk: 20 * GiB }, { cpus: 2, memoryBytes: GiB, diskBytes: 20 * GiB }, 'x'),
    ).toEqual([]);
    expect(
      resourceIssues({ cpus: 64, memory: 64 * GiB, disk: 1024 * GiB }, { cpus: 0, memoryBytes: 0, diskBytes: 0 }, 'x'),
    ).toEqual([]);
    // Limits not known (an executor that does not report them) refuse nothing.
    expect(resourceIssues({ cpus: 64, disk: 1024 * GiB }, {}, 'x')).toEqual([]);
    expect(resourceIssues(undefined, { cpus: 1, memoryBytes: GiB }, 'x')).toEqual([]);
  });

  it('name each resource asked for beyond the limit, with the setting that sets it', () => {
    expect(
      resourceIssues(
        { cpus: 4, memory: 3 * GiB, disk: 1024 * GiB },
        { cpus: 2, memoryBytes: GiB, diskBytes: 20 * GiB },
        "this executor's limits",
      ),
    ).toEqual([
      {
        field: 'resources.cpus',
        message: "asks for 4 CPUs but this executor's limits allow at most 2 per job (EXECUTOR_JOB_NUM_CPUS)",
      },
      {
        field: 'resources.memory',
        message: "asks for 3Gi but this executor's limits allow at most 1Gi per job (EXECUTOR_JOB_MEMORY)",
      },
      {
        field: 'resources.disk',
        message: "asks for 1Ti but this executor's limits allow at most 20Gi per job (EXECUTOR_JOB_DISK)",
      },
    ]);
  });

  it("give a step the job's own request, else the executor's limit", () => {
    expect(effectiveLimits({ cpus: 0.5, disk: GiB }, { cpus: 2, memoryBytes: GiB, diskBytes: 20 * GiB })).toEqual({
      cpus: 0.5,
      memoryBytes: GiB,
      diskBytes: GiB,
    });
    expect(effectiveLimits(undefined, { cpus: 2, memoryBytes: 0, diskBytes: 20 * GiB })).toEqual({
      cpus: 2,
      memoryBytes: 0,
      diskBytes: 20 * GiB,
    });
  });

  it("take the loosest limits of a queue's executors, and none when one of them enforces nothing", () => {
    expect(
      loosestLimits([
        { jobCpus: 1, jobMemoryBytes: GiB, jobDiskBytes: 20 * GiB },
        { jobCpus: 2, jobMemoryBytes: 0, jobDiskBytes: 50 * GiB },
      ]),
    ).toEqual({ cpus: 2, memoryBytes: 0, diskBytes: 50 * GiB });
    expect(
      loosestLimits([
        { jobCpus: 1, jobMemoryBytes: GiB, jobDiskBytes: 20 * GiB },
        { jobCpus: 1, jobMemoryBytes: GiB, jobDiskBytes: 0 },
      ]),
    ).toEqual({ cpus: 1, memoryBytes: GiB, diskBytes: 0 });
    expect(
      loosestLimits([
        { jobCpus: 1, jobMemoryBytes: GiB, jobDiskBytes: 20 * GiB },
        { jobCpus: null, jobMemoryBytes: null, jobDiskBytes: null },
      ]),
    ).toBeUndefined();
    expect(loosestLimits([])).toBeUndefined();
  });

  it('count an executor from before disk limits (CPU and memory, no disk) as unbounded for disk only', () => {
    const limits = loosestLimits([
      { jobCpus: 2, jobMemoryBytes: GiB, jobDiskBytes: 20 * GiB },
      { jobCpus: 1, jobMemoryBytes: 2 * GiB, jobDiskBytes: null },
    ]);
    expect(limits).toEqual({ cpus: 2, memoryBytes: 2 * GiB, diskBytes: 0 });
    expect(resourceIssues({ cpus: 4, disk: 1024 * GiB }, limits!, 'x').map((i) => i.field)).toEqual(['resources.cpus']);
    expect(loosestLimits([{ jobCpus: 2, jobMemoryBytes: GiB, jobDiskBytes: 20 * GiB }])).toEqual({
      cpus: 2,
      memoryBytes: GiB,
      diskBytes: 20 * GiB,
    });
  });
});
