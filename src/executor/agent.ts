// The executor's agent: takes jobs while it has free slots, heartbeats, runs each job in its runtime, and
// delivers logs and results until the server acknowledges them, through server restarts and network faults.
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { MAX_DEQUEUE_BATCH, type DequeuedJob } from '../core/protocol.js';
import { secretsOf } from '../core/dockerAuthConfig.js';
import { VERSION } from '../core/version.js';
import { failure } from '../core/failureReasons.js';
import { ApiError, ExecutorApiClient, type FinalReport } from './apiClient.js';
import type { ExecutorConfig } from './config.js';
import { JobLog } from './jobLog.js';
import { Outbox } from './outbox.js';
import { runJob, type StopReason } from './jobRunner.js';
import { Redactor, executorLogRedactor } from './redactor.js';
import { urlCredentials } from './workspace/checkout.js';
import type { Runtime } from './runtimes/runtime.js';

interface RunningJob {
  job: DequeuedJob;
  log: JobLog;
  /** Masks the job's secrets, its token and the executor's in everything sent about the job. */
  redactor: Redactor;
  /** What the job added to the executor's log redactor: taken out again when the job is done. */
  masked: string[];
  stop: AbortController;
  /** The server no longer wants this attempt: stop it and send nothing more. */
  gone: boolean;
  done?: Promise<void>;
}

const DEQUEUE_WAIT_MS = 25_000;
const MAX_RETRY_DELAY_MS = 5_000;
/** Finished jobs whose results may wait for the server, per job slot (see freeSlots). */
const UNDELIVERED_PER_SLOT = 3;
/**
 * The held heartbeat is sent again when jobs start, so that a cancel of a new job arrives at once; at most this
 * often, so that an executor starting hundreds of short jobs a second does not turn that into as many heartbeats.
 */
const MIN_REISSUE_MS = 500;

/**
 * Another live executor process holds this executor's name (the server's 409 executor_name_in_use). The message is
 * the server's: it names the name, both hosts and the fix.
 */
export class ExecutorNameInUseError extends Error {}

/** A one-time wake-up: far cheaper than an AbortController, whose abort builds an exception with a stack trace. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** An interruptible wait: resolves after `ms` or as soon as `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal }).catch(() => undefined);
}

export class Agent {
  private readonly api: ExecutorApiClient;
  private readonly outbox: Outbox;
  /** The executor's own secrets (its token, its registry logins), masked in every job's output. */
  private readonly executorMasks = new Redactor();
  private readonly jobs = new Map<string, RunningJob>();
  /** Jobs whose steps run. */
  private active = 0;
  /** Jobs whose steps ended and whose results the server has not acknowledged yet. */
  private undelivered = 0;
  private draining = false;
  private stopped = false;
  private readonly dequeueAbort = new AbortController();
  /** Resolved (and replaced) when a job ends and its slot is free again. */
  private slotFreed = signal();
  private jobsChanged = new AbortController();
  private lastReissueAt = 0;
  private reissueTimer?: NodeJS.Timeout;
  private dequeueLoop?: Promise<void>;
  private heartbeatLoop?: Promise<void>;
  private runtimeVersion?: string;
  /** This process, told apart by the server from another one started under the same name. */
  private readonly instanceId = randomUUID();
  private settleNameLost!: (err: ExecutorNameInUseError) => void;
  /**
   * Settles if the server gives this executor's name to another process while this one runs (it was cut off for
   * longer than its window): the agent takes no more jobs, and the caller should stop it and exit with the message.
   */
  readonly nameLost = new Promise<ExecutorNameInUseError>((resolve) => (this.settleNameLost = resolve));
  private lostName = false;

  constructor(
    private readonly config: ExecutorConfig,
    private readonly runtime: Runtime,
    private readonly log: Logger,
    /** Redacts the executor's own log (`log` must write through it); running jobs' secrets are added to it. */
    private readonly logRedactor: Redactor = executorLogRedactor,
  ) {
    this.api = new ExecutorApiClient(config.frontendUrl, config.frontendPassword);
    this.outbox = new Outbox(this.api);
    this.executorMasks.add(config.frontendPassword, 'PASSWORD_REMOVED');
    for (const secret of runtime.secrets?.() ?? []) {
      this.executorMasks.add(secret, '***');
      logRedactor.add(secret, '***');
    }
    logRedactor.add(config.frontendPassword, 'PASSWORD_REMOVED');
  }

  get name(): string {
    return this.config.name;
  }

  /** Registers with the server (retrying until it answers) and starts taking jobs. */
  async start(signal?: AbortSignal): Promise<void> {
    this.runtimeVersion = await this.runtime.version();
    await this.register(signal);
    // Only once the name is ours: the janitor of a second process under it would remove the first one's containers.
    await this.runtime.cleanupOrphans?.();
    this.log.info(
      { name: this.name, queues: this.config.queues, runtime: this.runtime.name, slots: this.config.maxJobs },
      'executor registered',
    );
    this.heartbeatLoop = this.heartbeats();
    this.dequeueLoop = this.takeJobs();
  }

  /**
   * The first heartbeat, retried every second until the server answers. Refused because another process holds the
   * name, it retries for that one's window: the holder may be this executor's previous process, killed without a
   * word, whose window runs out by itself. Still refused after the window, the holder is alive: ExecutorNameInUseError.
   */
  private async register(signal?: AbortSignal): Promise<void> {
    let refusedSince: number | undefined;
    for (let attempt = 1; ; attempt++) {
      let retryInMs = 1_000;
      try {
        await this.api.heartbeat(this.heartbeatBody([], 0), signal);
        return;
      } catch (err) {
        if (signal?.aborted) throw new Error('stopped before the server answered');
        if (err instanceof ApiError && err.status === 401)
          throw new Error(`the server refused this executor's token: ${err.message}`);
        const inUse = err instanceof ApiError ? err.nameInUse : undefined;
        if (inUse) {
          const now = Date.now();
          if (refusedSince === undefined) {
            refusedSince = now;
            this.log.warn(
              { err: inUse.message, windowMs: inUse.windowMs },
              'another process holds this executor name; waiting to see whether it is still running',
            );
          }
          // A second beyond the window, for the round trips: a refusal then means the holder called again.
          if (now - refusedSince >= inUse.windowMs + 1_000) throw new ExecutorNameInUseError(inUse.message);
          retryInMs = Math.min(1_000, inUse.retryAfterMs + 50);
        } else {
          refusedSince = undefined;
          if (attempt === 1 || attempt % 30 === 0)
            this.log.warn({ err: (err as Error).message }, 'waiting for the server to answer');
        }
        await pause(retryInMs, signal);
      }
    }
  }

  /** The server gave this executor's name to another process: take no more jobs, and tell the caller (nameLost). */
  private loseName(message: string): void {
    if (this.lostName) return;
    this.lostName = true;
    this.log.error({ err: message }, "the server gave this executor's name to another process; stopping");
    this.draining = true;
    this.dequeueAbort.abort();
    this.settleNameLost(new ExecutorNameInUseError(message));
  }

  /** Gives the name up as this process stops, so that a successor started at once need not wait out its window. */
  private async releaseName(): Promise<void> {
    if (this.lostName) return;
    await this.api.release({ executorName: this.name, instanceId: this.instanceId }, 2_000).catch(() => undefined);
  }

  /** Graceful stop: take no new jobs, let running ones finish and deliver their results. */
  async drain(): Promise<void> {
    this.draining = true;
    this.dequeueAbort.abort();
    await this.dequeueLoop;
    await Promise.all([...this.jobs.values()].map((j) => j.done ?? Promise.resolve()));
    this.stopped = true;
    this.jobsChanged.abort();
    await this.heartbeatLoop;
    await this.runtime.close?.();
    await this.releaseName();
  }

  /** Hard stop: stop running jobs and report them as errored (retryable), giving delivery `graceMs`. */
  async abort(graceMs = 10_000): Promise<void> {
    this.draining = true;
    this.dequeueAbort.abort();
    for (const job of this.jobs.values()) job.stop.abort('shutdown' satisfies StopReason);
    await Promise.race([Promise.all([...this.jobs.values()].map((j) => j.done ?? Promise.resolve())), sleep(graceMs)]);
    this.stopped = true;
    this.jobsChanged.abort();
    await Promise.race([this.runtime.close?.(), sleep(graceMs)]);
    await this.releaseName();
  }

  private heartbeatBody(jobs: { id: number; attempt: number }[], waitMs: number) {
    return {
      executorName: this.name,
      hostname: os.hostname(),
      pid: process.pid,
      os: process.platform,
      arch: process.arch,
      version: VERSION,
      runtime: this.runtime.name,
      runtimeVersion: this.runtimeVersion,
      queues: this.config.queues,
      maxJobs: this.config.maxJobs,
      resources: this.resources(),
      jobs,
      waitMs,
      instanceId: this.instanceId,
      heartbeatIntervalMs: this.config.heartbeatIntervalMs,
    };
  }

  /** The per-job limits this executor enforces, so the server can refuse jobs that ask for more. */
  private resources(): { cpus: number; memoryBytes: number; diskBytes: number } | undefined {
    const limits = this.runtime.limits?.();
    return limits && { cpus: limits.cpus, memoryBytes: limits.memoryBytes, diskBytes: limits.diskBytes };
  }

  private async takeJobs(): Promise<void> {
    let delay = 250;
    while (!this.draining) {
      if (this.freeSlots() === 0) {
        await Promise.race([this.slotFreed.promise, pause(60_000, this.dequeueAbort.signal)]);
        // Jobs often end together (one batch answers all their reports): let them all free their slots first, so
        // that one dequeue asks for all of them.
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      try {
        // As many jobs as there are free slots, in one request: a server with a backlog hands them out together.
        const jobs = await this.api.dequeue(
          {
            executorName: this.name,
            version: VERSION,
            queues: this.config.queues,
            weights: this.config.weights,
            resources: this.resources(),
            waitMs: DEQUEUE_WAIT_MS,
            maxJobs: Math.min(this.freeSlots(), MAX_DEQUEUE_BATCH),
            instanceId: this.instanceId,
            heartbeatIntervalMs: this.config.heartbeatIntervalMs,
            hostname: os.hostname(),
          },
          this.dequeueAbort.signal,
        );
        delay = 250;
        for (const job of jobs) this.startJob(job);
      } catch (err) {
        if (this.draining) break;
        if (err instanceof ApiError && err.nameInUse) {
          this.loseName(err.nameInUse.message);
          break;
        }
        this.log.warn({ err: (err as Error).message, retryInMs: delay }, 'dequeue failed');
        await pause(delay, this.dequeueAbort.signal);
        delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
      }
    }
  }

  private startJob(job: DequeuedJob): void {
    // The same job again means our earlier attempt was reset: that one is stale.
    for (const other of this.jobs.values())
      if (other.job.id === job.id) this.abandon(other, 'a newer attempt of the job was dequeued');
    const masks: [value: string, replacement: string][] = [
      [job.token, 'JOB_TOKEN_REMOVED'],
      ...Object.entries(job.secrets ?? {}).map(([name, value]): [string, string] => [value, `\${{ secrets.${name} }}`]),
      ...urlCredentials(job.spec.repository?.url).map((credential): [string, string] => [credential, '***']),
      ...secretsOf(job.dockerAuthConfig).map((secret): [string, string] => [secret, '***']),
    ];
    // The executor's own secrets, then the job's.
    const redactor = this.executorMasks.fork();
    for (const [value, replacement] of masks) redactor.add(value, replacement);
    // Counted: a value two running jobs share stays masked until both are done. Job tokens are masked in the
    // executor's log by their pattern (executorLogHooks) instead, so that a job without secrets changes nothing here.
    const masked = masks.filter(([value]) => value !== job.token);
    for (const [value, replacement] of masked) this.logRedactor.add(value, replacement);
    const running: RunningJob = {
      job,
      // Once abandoned, nothing more is sent for the attempt, though its step may take the kill grace to stop.
      log: new JobLog(
        (entries) =>
          running.gone ? Promise.reject(new Error('the attempt was abandoned')) : this.outbox.appendLogs(job, entries),
        redactor,
        this.config.maxLogSize,
      ),
      redactor,
      masked: masked.map(([value]) => value),
      stop: new AbortController(),
      gone: false,
    };
    const key = `${job.id}.${job.attempt}`;
    this.jobs.set(key, running);
    this.active++;
    this.log.info({ jobId: job.id, attempt: job.attempt, queue: job.queue }, 'job started');
    running.done = this.execute(running).finally(() => {
      for (const value of running.masked) this.logRedactor.remove(value);
      this.jobs.delete(key);
      this.changed();
    });
    this.changed();
  }

  /**
   * Slots free for new jobs. A job's slot frees when its step ends, so that its report travels while the next job
   * runs, but no more than UNDELIVERED_PER_SLOT × maxJobs finished jobs may wait for the server to take their
   * results. Without that bound, an executor facing a server that fell behind piled up finished jobs (and their
   * logs, in memory) that all ran again when it was killed: 1,856 of them on 128 slots in a soak run. Waiting for
   * each result before reusing its slot instead cost a third of the zero-step throughput on PostgreSQL.
   */
  private freeSlots(): number {
    const { maxJobs } = this.config;
    return Math.max(
      0,
      Math.min(maxJobs - this.active, (1 + UNDELIVERED_PER_SLOT) * maxJobs - this.active - this.undelivered),
    );
  }

  private slotChanged(): void {
    this.slotFreed.resolve();
    this.slotFreed = signal();
  }

  private async execute(running: RunningJob): Promise<void> {
    const { job, log } = running;
    const flusher = setInterval(() => void this.flushLog(running), this.config.logFlushIntervalMs);
    let report: FinalReport | undefined;
    try {
      report = await runJob({ job, runtime: this.runtime, config: this.config, log, stop: running.stop.signal });
    } catch (err) {
      report = failure('system_failure', `the executor failed while running the job: ${(err as Error).message}`);
    } finally {
      clearInterval(flusher);
      this.active--;
    }
    if (!report || running.gone) {
      this.slotChanged();
      this.log.info(
        { jobId: job.id, attempt: job.attempt },
        'job abandoned: the server no longer assigns it to this executor',
      );
      return;
    }
    this.undelivered++;
    this.slotChanged();
    try {
      // A message can quote what the job did (a git error, a runtime's reason): it is redacted like the log.
      await this.deliver(
        running,
        report.kind === 'complete' ? report : { ...report, message: running.redactor.redact(report.message) },
      );
    } finally {
      this.undelivered--;
      this.slotChanged();
    }
  }

  private async flushLog(running: RunningJob): Promise<void> {
    try {
      await running.log.flush();
    } catch (err) {
      if (err instanceof ApiError && err.attemptGone) this.abandon(running, err.message);
      // Anything else: the output stays buffered and goes with the next flush.
    }
  }

  /** Sends the remaining log, then the result, until the server has acknowledged both. */
  private async deliver(running: RunningJob, report: FinalReport): Promise<void> {
    const { job, log } = running;
    let delay = 250;
    let warned = false;
    while (!running.gone) {
      try {
        while (log.dirty) await log.flush();
        const answer = await this.outbox.finish(job, report);
        this.log.info(
          {
            jobId: job.id,
            attempt: job.attempt,
            report: report.kind,
            state: answer.state,
            ...(report.kind === 'complete' ? {} : { message: report.message }),
          },
          'job finished',
        );
        return;
      } catch (err) {
        if (err instanceof ApiError && err.attemptGone) {
          this.log.warn(
            { jobId: job.id, attempt: job.attempt, err: err.message },
            "the server refused this attempt's result",
          );
          return;
        }
        if (err instanceof ApiError && !err.retryable) {
          this.log.error({ jobId: job.id, err: err.message }, 'the server rejected the result');
          return;
        }
        if (!warned)
          this.log.warn(
            { jobId: job.id, err: (err as Error).message },
            'cannot deliver the result yet; keeping it and retrying',
          );
        warned = true;
        await pause(delay);
        delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
      }
    }
  }

  private abandon(running: RunningJob, why: string): void {
    if (running.gone) return;
    running.gone = true;
    this.log.warn({ jobId: running.job.id, attempt: running.job.attempt, why }, 'abandoning job');
    running.stop.abort('abandoned' satisfies StopReason);
  }

  /** The set of jobs changed: re-issue the held heartbeat so cancels for new jobs arrive at once. */
  private changed(): void {
    if (this.reissueTimer) return;
    const wait = this.lastReissueAt + MIN_REISSUE_MS - Date.now();
    const reissue = (): void => {
      this.reissueTimer = undefined;
      this.lastReissueAt = Date.now();
      this.jobsChanged.abort();
    };
    if (wait <= 0) reissue();
    else this.reissueTimer = setTimeout(reissue, wait).unref();
  }

  private async heartbeats(): Promise<void> {
    const firstRetryMs = Math.min(1_000, this.config.heartbeatIntervalMs);
    let delay = firstRetryMs;
    while (!this.stopped) {
      this.jobsChanged = new AbortController();
      const snapshot = [...this.jobs.values()].filter((j) => !j.gone);
      const refs = snapshot.map((j) => ({ id: j.job.id, attempt: j.job.attempt }));
      const started = Date.now();
      try {
        const answer = await this.api.heartbeat(
          this.heartbeatBody(refs, refs.length ? this.config.heartbeatIntervalMs : 0),
          this.jobsChanged.signal,
        );
        delay = firstRetryMs;
        const known = new Set(answer.knownIds);
        const cancel = new Set(answer.cancelIds);
        for (const running of snapshot) {
          if (!known.has(running.job.id))
            this.abandon(running, 'the server no longer knows this attempt (it was reset, canceled or finished)');
          else if (cancel.has(running.job.id) && !running.stop.signal.aborted) {
            this.log.info({ jobId: running.job.id }, 'canceling job on request');
            running.stop.abort('canceled' satisfies StopReason);
          }
        }
        // Without jobs the server answers at once: beat at the interval (early if a job arrives). With jobs the
        // server held the request for the interval, or answered early with a cancel: go again at once.
        const rest = this.config.heartbeatIntervalMs - (Date.now() - started);
        if (refs.length === 0 && rest > 0) await pause(rest, this.jobsChanged.signal);
      } catch (err) {
        if (this.jobsChanged.signal.aborted) continue;
        if (err instanceof ApiError && err.nameInUse) return this.loseName(err.nameInUse.message);
        // One failed heartbeat never cancels anything: jobs keep running and the next beat tries again.
        this.log.warn({ err: (err as Error).message }, 'heartbeat failed');
        await pause(delay, this.jobsChanged.signal);
        // Never wait longer than a beat: when the server is back, it must hear from us before it resets our jobs.
        delay = Math.min(delay * 2, this.config.heartbeatIntervalMs);
      }
    }
  }
}
