// Jobs as users see them: submit (checked before anything is stored), cancel, retry, and the reads those need.
// Routes in routes/jobRoutes.ts only parse and answer; in-process subsystems (builds, rollouts) call this directly.
import type { z } from 'zod';
import type { jobSpec, JobSpec } from '../../core/jobSpec.js';
import { isTerminal } from '../../core/jobState.js';
import { loosestLimits, resourceIssues } from '../../core/resources.js';
import type { ExecutorRecord, JobRecord, NewJob } from '../../store/store.js';
import { requireNamespaceExists, type Principal } from '../access.js';
import type { ServerContext } from '../context.js';
import { HttpError, badRequest } from '../httpError.js';

export type SubmittedSpec = z.output<typeof jobSpec>;

/** Executors heard from this recently speak for their queue's limits. */
const LIMITS_WINDOW_MS = 10 * 60_000;

/** What one submit looks up in the store, each once however many jobs it carries. */
interface Lookups {
  /** Namespaces found to exist. */
  namespaces: Set<string>;
  executors(): Promise<ExecutorRecord[]>;
}

export class JobService {
  constructor(private readonly ctx: Omit<ServerContext, 'closing' | 'log'>) {}

  /**
   * Submits jobs for `me`, all or none: every one is checked before any is stored, and one bad job refuses the call,
   * its errors' fields prefixed with `fieldPrefix(i)` ("jobs[3]." in a batch).
   */
  async submit(me: Principal, specs: SubmittedSpec[], fieldPrefix = (_i: number) => ''): Promise<JobRecord[]> {
    this.ctx.storage.refuseNewWork();
    let executors: Promise<ExecutorRecord[]> | undefined;
    const lookups: Lookups = {
      namespaces: new Set(),
      executors: () => (executors ??= this.ctx.store.executors.listExecutors()),
    };
    const jobs: NewJob[] = [];
    for (const [i, spec] of specs.entries()) jobs.push(await this.prepare(me, spec, fieldPrefix(i), lookups));
    return this.ctx.ledger.submit(jobs, Date.now());
  }

  /** The job, if it exists and `me` may see it; another namespace's job answers exactly like a missing one. */
  async get(me: Principal, id: number): Promise<JobRecord> {
    const job = await this.ctx.store.jobs.getJob(id);
    if (!job || !me.mayUse(job.namespace)) throw new HttpError(404, `no job ${id}`);
    return job;
  }

  /** Cancels a job: a queued one at once, a running one as soon as its executor stops it. 409 once finished. */
  async cancel(me: Principal, id: number): Promise<JobRecord> {
    const current = await this.get(me, id);
    if (isTerminal(current.state))
      throw new HttpError(409, `job ${current.id} already ${current.state}; nothing to cancel`);
    const job = (await this.ctx.ledger.requestCancel(current.id, Date.now()))!;
    // It may have finished between the look above and the cancel: then there was nothing to cancel either.
    if (isTerminal(job.state) && job.state !== 'canceled')
      throw new HttpError(409, `job ${job.id} already ${job.state}; nothing to cancel`);
    return job;
  }

  /** Queues a finished job again (its attempts are kept). 409 while it has not finished. */
  async retry(me: Principal, id: number): Promise<JobRecord> {
    const current = await this.get(me, id);
    if (!isTerminal(current.state))
      throw new HttpError(409, `job ${current.id} is ${current.state}; only finished jobs can be retried`);
    this.ctx.storage.refuseNewWork();
    return (await this.ctx.ledger.retry(current.id, Date.now()))!;
  }

  /**
   * A submitted spec as the store takes it: in the submitter's own namespace unless it names another of theirs,
   * which must exist, with its secrets present and its resources within what the queue's executors allow.
   */
  private async prepare(me: Principal, body: SubmittedSpec, fieldPrefix: string, lookups: Lookups): Promise<NewJob> {
    const { store, secrets } = this.ctx;
    const { dockerAuthConfig, ...given } = body;
    const spec = { ...given, namespace: given.namespace ?? `user:${me.name}` };
    me.requireNamespace(spec.namespace, `${fieldPrefix}namespace`);
    if (!lookups.namespaces.has(spec.namespace))
      await requireNamespaceExists(store.accounts, spec.namespace, `${fieldPrefix}namespace`);
    lookups.namespaces.add(spec.namespace);
    await this.requireSecrets(spec.namespace, spec.secrets ?? [], fieldPrefix);
    await refuseUnrunnable(lookups, spec, fieldPrefix);
    return {
      spec,
      dockerAuthConfig: dockerAuthConfig && secrets.sealJobCredentials(JSON.stringify(dockerAuthConfig)),
      submittedBy: me.name,
    };
  }

  /** Every secret a job names must exist in its namespace or in global when it is submitted. */
  private async requireSecrets(namespace: string, names: string[], fieldPrefix: string): Promise<void> {
    const missing = new Set(await this.ctx.secrets.missing(namespace, names));
    if (!missing.size) return;
    const issues = names.flatMap((name, index) =>
      missing.has(name)
        ? [
            {
              field: `${fieldPrefix}secrets[${index}]`,
              message: `no secret "${name}" in ${namespace} or global; create it with: dockhand secret set ${name} --namespace ${namespace}`,
            },
          ]
        : [],
    );
    throw badRequest('invalid job spec', issues);
  }
}

/** A job that asks for more CPU, memory or disk than any executor of its queue allows would only fail later: say so now. */
async function refuseUnrunnable(lookups: Lookups, spec: JobSpec, fieldPrefix: string): Promise<void> {
  if (!spec.resources) return;
  const since = Date.now() - LIMITS_WINDOW_MS;
  const executors = (await lookups.executors()).filter((e) => e.lastSeenAt >= since && e.queues.includes(spec.queue));
  const limits = loosestLimits(executors);
  if (!limits) return;
  const issues = resourceIssues(spec.resources, limits, `the executors of queue "${spec.queue}"`);
  if (issues.length)
    throw badRequest(
      'invalid job spec',
      issues.map((i) => ({ ...i, field: fieldPrefix + i.field })),
    );
}
