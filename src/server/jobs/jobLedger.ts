// Every change to jobs and executors goes through here, and each emits its domain events as it is stored (the way
// graphile-worker NOTIFYs inside the mutation): services change jobs only through the ledger, so none can change
// one and forget the wake-up. Batch-first: each call takes many and stores them in one transaction.
import type {
  ClaimedJob,
  DequeueManyArgs,
  ExecutorClaim,
  ExecutorInfo,
  FinishRequest,
  FinishResult,
  InstanceClaim,
  JobRecord,
  LogAppend,
  LogAppendResult,
  NewJob,
  StallResult,
  StallSweep,
  Store,
  ExecutorStore,
  JobStore,
  LogStore,
} from '../../store/store.js';
import type { DomainEvent, DomainEvents } from '../events/domainEvents.js';

/** The job area's changes, which only the ledger makes. */
type JobWrites =
  | 'enqueue'
  | 'enqueueMany'
  | 'dequeue'
  | 'dequeueMany'
  | 'heartbeat'
  | 'finish'
  | 'finishMany'
  | 'requestCancel'
  | 'retry'
  | 'resetStalled';

/** The store as services and routes see it: reads (and accounts); jobs, logs and executors change through the ledger. */
export type StoreReads = Omit<Store, 'jobs' | 'logs' | 'executors'> & {
  readonly jobs: Omit<JobStore, JobWrites>;
  readonly logs: Omit<LogStore, 'appendLogs' | 'appendLogsMany'>;
  readonly executors: Pick<ExecutorStore, 'executorInstance' | 'listExecutors'>;
};

type RequeueCause = Extract<DomainEvent, { type: 'job.requeued' }>['cause'];
type FinishedCause = Extract<DomainEvent, { type: 'job.finished' }>['cause'];
/** Who ends attempts through finish(): their executors' reports, or the server for a job it cannot hand out. */
export type FinishCause = Extract<FinishedCause, 'report' | 'unrunnable'>;

export class JobLedger {
  constructor(
    private readonly store: Store,
    private readonly events: DomainEvents,
  ) {}

  /** Stores jobs, all or none, in order. */
  async submit(jobs: NewJob[], now: number): Promise<JobRecord[]> {
    const queued = await this.store.jobs.enqueueMany(jobs, now);
    for (const job of queued)
      this.events.emit({ type: 'job.submitted', jobId: job.id, queue: job.queue, namespace: job.namespace });
    return queued;
  }

  /** Claims ready jobs for an executor, each as a new attempt. */
  async claim(args: DequeueManyArgs): Promise<ClaimedJob[]> {
    const claimed = await this.store.jobs.dequeueMany(args);
    for (const { job } of claimed)
      this.events.emit({
        type: 'job.started',
        jobId: job.id,
        queue: job.queue,
        attempt: job.attempt,
        executorName: args.executorName,
      });
    return claimed;
  }

  /** Stores output, each item only while its attempt is current. */
  async appendLogs(items: LogAppend[]): Promise<LogAppendResult[]> {
    const results = await this.store.logs.appendLogsMany(items);
    results.forEach((result, i) => {
      if (result.ok) this.events.emit({ type: 'job.output', jobId: items[i].jobId, attempt: items[i].attempt });
    });
    return results;
  }

  /** Records attempts' final reports (or, `unrunnable`, the server's own failure of a job it cannot hand out). */
  async finish(requests: FinishRequest[], cause: FinishCause = 'report'): Promise<FinishResult[]> {
    const results = await this.store.jobs.finishMany(requests);
    for (const result of results) if (result.ok && result.changed) this.left(result.job, 'error', cause);
    return results;
  }

  /** A queued job is canceled at once; a running one is marked, for its executor to stop. */
  async requestCancel(id: number, now: number): Promise<JobRecord | undefined> {
    const job = await this.store.jobs.requestCancel(id, now);
    if (job?.state === 'canceled') this.finished(job, 'cancel');
    else if (job?.state === 'processing' && job.cancelRequested)
      this.events.emit({ type: 'job.cancelRequested', jobId: job.id, queue: job.queue, attempt: job.attempt });
    return job;
  }

  /** Queues a finished job again. */
  async retry(id: number, now: number): Promise<JobRecord | undefined> {
    const job = await this.store.jobs.retry(id, now);
    if (job?.state === 'queued') this.requeued(job, 'retry');
    return job;
  }

  /** Queues again (or fails, after too many resets) jobs whose executors went silent. */
  async resetStalled(sweep: StallSweep): Promise<StallResult> {
    const result = await this.store.jobs.resetStalled(sweep);
    for (const job of [...result.reset, ...result.failed]) this.left(job, 'reset', 'stalled');
    return result;
  }

  /** Records an executor's heartbeat (see ExecutorStore.upsertExecutor for when another process holds its name). */
  async recordExecutor(info: ExecutorInfo, now: number, instance?: InstanceClaim): Promise<ExecutorClaim> {
    const claim = await this.store.executors.upsertExecutor(info, now, instance);
    if (claim.ok)
      this.events.emit({
        type: 'executor.seen',
        name: info.name,
        hostname: info.hostname,
        runningJobs: info.runningJobs,
      });
    return claim;
  }

  /** Keeps an executor's running jobs alive; answers which to abandon (not known) or cancel. Liveness, no event. */
  keepAlive(args: Parameters<JobStore['heartbeat']>[0]): ReturnType<JobStore['heartbeat']> {
    return this.store.jobs.heartbeat(args);
  }

  /** A stopping executor process lets go of its name (see ExecutorStore.releaseExecutorName). */
  releaseName(name: string, instanceId: string): Promise<void> {
    return this.store.executors.releaseExecutorName(name, instanceId);
  }

  /** A job whose attempt ended: queued again, or finished. */
  private left(job: JobRecord, requeueCause: RequeueCause, finishCause: FinishedCause): void {
    if (job.state === 'queued') this.requeued(job, requeueCause);
    else this.finished(job, finishCause);
  }

  private requeued(job: JobRecord, cause: RequeueCause): void {
    this.events.emit({
      type: 'job.requeued',
      jobId: job.id,
      queue: job.queue,
      attempt: job.attempt,
      cause,
      availableAt: job.availableAt,
    });
  }

  private finished(job: JobRecord, cause: FinishedCause): void {
    if (job.state !== 'completed' && job.state !== 'failed' && job.state !== 'canceled') return;
    this.events.emit({
      type: 'job.finished',
      jobId: job.id,
      queue: job.queue,
      attempt: job.attempt,
      state: job.state,
      reason: job.failureReason,
      cause,
    });
  }
}
