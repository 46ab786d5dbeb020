// `dockhand job …`, `dockhand executors` and `dockhand queues`: the client side of the API.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import type { ExecutorCompatibility } from '../../core/compatibility.js';
import { reasonSummary } from '../../core/failureReasons.js';
import { describeIssues, parseJobSpec, parseSpecText } from '../../core/jobSpec.js';
import type { JobState } from '../../core/jobState.js';
import { formatDuration, formatSize } from '../../core/units.js';
import type {
  ExecutorsResponse,
  JobPageResponse,
  JobResponse,
  JobWithAttemptsResponse,
  QueuesResponse,
  ExecutorView,
  JobView,
} from '../../core/api.js';
import { ClientApi, CliError } from '../client.js';
import { followJob } from '../follow.js';
import { ago, print, table } from '../output.js';

/** Exit codes of `--follow`: 0 only when the job completed. */
export const FOLLOW_EXIT: Record<string, number> = { completed: 0, failed: 1, canceled: 2 };

/**
 * "2 CPUs, 4Gi, 20Gi disk" for the limits an executor enforces per job; "-" when its runtime enforces none. An
 * executor from before disk limits reports none for disk ("disk not reported"; the server lets any size through).
 */
function jobLimits(e: Pick<ExecutorView, 'jobCpus' | 'jobMemoryBytes' | 'jobDiskBytes'>): string {
  if (e.jobCpus === null || e.jobMemoryBytes === null) return '-';
  const disk =
    e.jobDiskBytes === null ? 'disk not reported' : e.jobDiskBytes ? `${formatSize(e.jobDiskBytes)} disk` : 'any disk';
  return `${e.jobCpus ? `${e.jobCpus} CPUs` : 'any CPUs'}, ${e.jobMemoryBytes ? formatSize(e.jobMemoryBytes) : 'any memory'}, ${disk}`;
}

/** The COMPAT column: "ok", "OUTDATED (server 0.3.0)", "AHEAD (server 0.1.0)"; "-" when unknown or inactive. */
function compatLabel(compatibility: ExecutorCompatibility | null, serverVersion: string): string {
  switch (compatibility) {
    case 'up_to_date':
      return 'ok';
    case 'outdated':
      return `OUTDATED (server ${serverVersion})`;
    case 'version_ahead':
      return `AHEAD (server ${serverVersion})`;
    default:
      return '-';
  }
}

function parseIdArg(raw: string): number {
  const id = Number(raw);
  if (!Number.isInteger(id) || id <= 0) throw new CliError(`"${raw}" is not a job id (a positive whole number)`);
  return id;
}

function jobLine(job: JobView): string[] {
  const steps = job.spec.steps.length;
  return [
    String(job.id),
    job.queue,
    job.state,
    String(job.attempt),
    `${steps} step${steps === 1 ? '' : 's'}`,
    ago(job.createdAt),
    job.executorName ?? '-',
  ];
}

async function finishFollow(api: ClientApi, id: number, json: boolean, attempt?: number): Promise<void> {
  const state = await followJob(api, id, { json, attempt });
  process.exitCode = FOLLOW_EXIT[state] ?? 1;
}

export function registerJobCommands(program: Command): void {
  const job = program.command('job').description('Submit and manage jobs (uses DOCKHAND_URL and DOCKHAND_TOKEN)');

  job
    .command('submit <file>')
    .description('Submit a job spec (YAML or JSON; "-" reads stdin)')
    .option('--queue <queue>', 'put the job on this queue instead of the one in the file')
    .option('--follow', 'stream the logs until the job finishes; exit 0 only if it completed')
    .option('--json', 'machine-readable output')
    .action(async (file: string, opts: { queue?: string; follow?: boolean; json?: boolean }) => {
      let text: string;
      try {
        text = readFileSync(file === '-' ? 0 : file, 'utf8');
      } catch (err) {
        throw new CliError(`cannot read ${file}: ${(err as Error).message}`);
      }
      const doc = parseSpecText(text);
      if (!doc.ok) throw new CliError(`${file}:\n${describeIssues(doc.issues)}`);
      const raw = doc.value as Record<string, unknown>;
      const body = opts.queue && raw && typeof raw === 'object' ? { ...raw, queue: opts.queue } : raw;
      // Check locally first: the same schema the server applies, with the same messages.
      const checked = parseJobSpec(body);
      if (!checked.ok) throw new CliError(`${file} is not a valid job spec:\n${describeIssues(checked.issues)}`);
      const api = new ClientApi();
      const { job: created } = await api.request<JobResponse>('POST', '/jobs', body);
      if (opts.json && !opts.follow) print(true, created, () => '');
      else if (!opts.json) process.stderr.write(`submitted job ${created.id} to queue ${created.queue}\n`);
      if (opts.follow) await finishFollow(api, created.id, opts.json ?? false);
    });

  job
    .command('list')
    .description('List jobs, newest first')
    .option('--queue <queue>')
    .option('--state <state>', 'queued, processing, completed, failed or canceled')
    .option('--namespace <namespace>')
    .option('--limit <n>', 'how many', '50')
    .option('--before <id>', 'page: jobs older than this id')
    .option('--json')
    .action(
      async (opts: {
        queue?: string;
        state?: JobState;
        namespace?: string;
        limit: string;
        before?: string;
        json?: boolean;
      }) => {
        const params = new URLSearchParams({ limit: opts.limit });
        for (const key of ['queue', 'state', 'namespace', 'before'] as const)
          if (opts[key]) params.set(key, opts[key]!);
        const { jobs, nextBefore } = await new ClientApi().request<JobPageResponse>('GET', `/jobs?${params}`);
        print(opts.json ?? false, { jobs, nextBefore }, () =>
          jobs.length === 0
            ? 'no jobs'
            : table([['ID', 'QUEUE', 'STATE', 'ATTEMPT', 'STEPS', 'CREATED', 'EXECUTOR'], ...jobs.map(jobLine)]) +
              (nextBefore ? `\nmore: --before ${nextBefore}` : ''),
        );
      },
    );

  job
    .command('show <id>')
    .description('Show a job, its spec and attempts')
    .option('--json')
    .action(async (rawId: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<JobWithAttemptsResponse>('GET', `/jobs/${parseIdArg(rawId)}`);
      print(opts.json ?? false, data, () => {
        const { job: j, attempts } = data;
        const lines = [
          `job ${j.id}  ${j.state}${j.cancelRequested && j.state === 'processing' ? ' (cancel requested)' : ''}`,
          `queue:      ${j.queue}   namespace: ${j.namespace}`,
          `created:    ${new Date(j.createdAt).toISOString()}`,
          `attempts:   ${j.attempt} (failures ${j.numFailures}/${j.maxAttempts}, resets ${j.numResets})`,
        ];
        // The reason's name, as the API gives it (to search for), then what it means.
        if (j.failureReason)
          lines.push(
            `reason:     ${j.failureReason}${reasonSummary(j.failureReason) ? ` (${reasonSummary(j.failureReason)})` : ''}`,
          );
        if (j.failureMessage) lines.push(`message:    ${j.failureMessage}`);
        lines.push(`steps:      ${j.spec.steps.map((s) => s.key).join(', ') || '(none)'}`);
        for (const a of attempts) {
          const took = a.finishedAt ? formatDuration(a.finishedAt - a.startedAt) : 'running';
          const why = [a.failureReason && `[${a.failureReason}]`, a.message].filter(Boolean).join(' ');
          lines.push(
            `  #${a.attempt} on ${a.executorName}: ${a.outcome ?? 'running'} (${took})${why ? ` ${why}` : ''}`,
          );
        }
        return lines.join('\n');
      });
    });

  job
    .command('logs <id>')
    .description("Print a job's logs")
    .option('--follow', 'stream until the job finishes')
    .option('--attempt <n>', 'which attempt (default: the latest)')
    .option('--json')
    .action(async (rawId: string, opts: { follow?: boolean; attempt?: string; json?: boolean }) => {
      const id = parseIdArg(rawId);
      const attempt = opts.attempt ? parseIdArg(opts.attempt) : undefined;
      const api = new ClientApi();
      if (opts.follow) return finishFollow(api, id, opts.json ?? false, attempt);
      const data = await api.request<{
        attempt: number;
        entries: { key: string; command: string[]; exitCode: number | null; durationMs: number | null; out: string }[];
      }>('GET', `/jobs/${id}/logs${attempt ? `?attempt=${attempt}` : ''}`);
      if (opts.json) return print(true, data, () => '');
      for (const entry of data.entries) {
        process.stderr.write(`==> ${entry.key}: ${entry.command.join(' ')}\n`);
        for (const line of entry.out.split('\n')) {
          if (!line) continue;
          if (line.startsWith('stderr: ')) process.stderr.write(`${line.slice(8)}\n`);
          else process.stdout.write(`${line.replace(/^stdout: /, '')}\n`);
        }
        if (entry.exitCode !== null)
          process.stderr.write(
            `<== ${entry.key}: exit ${entry.exitCode} in ${formatDuration(entry.durationMs ?? 0)}\n`,
          );
      }
    });

  for (const [name, verb] of [
    ['cancel', 'Cancel a queued or running job'],
    ['retry', 'Queue a finished job again'],
  ] as const) {
    job
      .command(`${name} <id>`)
      .description(verb)
      .option('--json')
      .action(async (rawId: string, opts: { json?: boolean }) => {
        const { job: j } = await new ClientApi().request<JobResponse>('POST', `/jobs/${parseIdArg(rawId)}/${name}`);
        print(opts.json ?? false, j, () =>
          name === 'cancel' && j.state === 'processing'
            ? `job ${j.id}: cancel requested; its executor is stopping it`
            : `job ${j.id}: ${j.state}`,
        );
      });
  }

  program
    .command('executors')
    .description(
      'List executors: name, hostname, queues, version and whether it suits the server, runtime, per-job limits, last seen',
    )
    .option('--json')
    .action(async (opts: { json?: boolean }) => {
      const { executors, serverVersion } = await new ClientApi().request<ExecutorsResponse>('GET', '/executors');
      print(opts.json ?? false, executors, () =>
        executors.length === 0
          ? 'no executors have registered yet'
          : table([
              // COMPAT goes last, after ACTIVE (an inactive executor's is "-"), so the earlier columns keep their places.
              ['NAME', 'HOSTNAME', 'QUEUES', 'VERSION', 'RUNTIME', 'PER JOB', 'JOBS', 'LAST SEEN', 'ACTIVE', 'COMPAT'],
              ...executors.map((e) => [
                e.name,
                e.hostname,
                e.queues.join(','),
                e.version,
                e.runtime,
                jobLimits(e),
                `${e.runningJobs}/${e.maxJobs ?? '?'}`,
                ago(e.lastSeenAt),
                e.active ? 'yes' : 'no',
                compatLabel(e.compatibility, serverVersion),
              ]),
            ]),
      );
    });

  program
    .command('queues')
    .description('Queued and running jobs per queue, and the jobs done (completed) and failed in the last hour')
    .option('--json')
    .action(async (opts: { json?: boolean }) => {
      const { queues } = await new ClientApi().request<QueuesResponse>('GET', '/queues');
      print(opts.json ?? false, queues, () =>
        queues.length === 0
          ? 'no queued or running jobs, none finished in the last hour'
          : table([
              ['QUEUE', 'QUEUED', 'RUNNING', 'OLDEST QUEUED', 'DONE 1H', 'FAILED 1H'],
              ...queues.map((q) => [
                q.queue,
                String(q.queued),
                String(q.processing),
                ago(q.oldestQueuedAt),
                String(q.completedLastHour),
                String(q.failedLastHour),
              ]),
            ]),
      );
    });
}
