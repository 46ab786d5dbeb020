// Dispatch: handing jobs to executors and hearing back from them (docs/protocol.md). The long-poll dequeue, the
// heartbeat that registers an executor and keeps its jobs alive, log appends and final reports; the routes in
// routes/executorRoutes.ts only parse and answer. Every change goes through the JobLedger, which emits its events.
import type { z } from 'zod';
import { instanceWindowMs, mayUseName, nameInUseMessage, type ExecutorInstance } from '../../core/executorNames.js';
import { weightedOrder } from '../../core/fairness.js';
import type { FailureReason } from '../../core/failureReasons.js';
import {
  EXECUTOR_NAME_IN_USE,
  STALE_ATTEMPT,
  type AppendLogsResponse,
  type BatchItemResult,
  type DequeuedJob,
  type HeartbeatResponse,
  type LogEntryUpdate,
  type NameInUseAnswer,
  type batchRequest,
  type dequeueRequest,
  type heartbeatRequest,
  type releaseRequest,
} from '../../core/protocol.js';
import { JOB_TOKEN_PREFIX, hashToken, newToken } from '../../core/tokens.js';
import type { StoredSecret } from '../../store/accounts.js';
import type {
  AttemptRecord,
  FinishKind,
  FinishRequest,
  FinishResult,
  JobRecord,
  LogAppendResult,
} from '../../store/store.js';
import type { ServerContext } from '../context.js';
import { HttpError } from '../httpError.js';
import { jobTokenAttempt } from '../http.js';
import { DecryptError } from '../secrets/keyring.js';
import { MissingSecretError } from '../secrets/secrets.js';

/** An attempt's final report: the body of `/complete`, `/error` or `/fail`, with which it is. */
export type Report = { kind: FinishKind; message?: string; reason?: FailureReason; canceled?: boolean };

type DequeueBody = z.output<typeof dequeueRequest>;
type HeartbeatBody = z.output<typeof heartbeatRequest>;
type BatchItem = z.output<typeof batchRequest>['items'][number];

export function staleAttempt(jobId: number, attempt: number, state?: string): HttpError {
  return new HttpError(
    409,
    `attempt ${attempt} of job ${jobId} is no longer current${state ? ` (job is ${state})` : ''}; stop working on it`,
    { code: STALE_ATTEMPT },
  );
}

export class DispatchService {
  /**
   * Until when each name is surely held by the process this replica last accepted a heartbeat from: nobody can take
   * it before that process's window runs out, so its dequeues need not read the store (one query per dequeue).
   */
  private readonly heldNames = new Map<string, { instanceId: string; until: number }>();

  constructor(private readonly ctx: Omit<ServerContext, 'closing'>) {}

  /**
   * Claims up to `maxJobs` jobs (1 without it) for an executor, waiting up to `waitMs` for one to be ready; none when
   * none came in time or `signal` aborted. Refused (409) when another live process holds the executor's name.
   */
  async dequeue(body: DequeueBody, signal: AbortSignal): Promise<DequeuedJob[]> {
    const { store, wakeups, metrics } = this.ctx;
    const started = Date.now();
    let nameCheckedUntil = 0;
    /** A process whose name went to another one (it froze or was cut off) must not take jobs under it. */
    const checkName = async (instanceId: string): Promise<void> => {
      const now = Date.now();
      if (now < nameCheckedUntil) return;
      const known = this.heldNames.get(body.executorName);
      if (known?.instanceId === instanceId && now < known.until) {
        nameCheckedUntil = known.until;
        return;
      }
      const holder = await store.executors.executorInstance(body.executorName);
      if (!mayUseName(holder, instanceId, now)) throw this.refused(body.executorName, holder!, body.hostname, now);
      // Nobody can take the name before its holder's window runs out, so a held request need not look again
      // until then; a process that does not hold it yet looks before every claim.
      nameCheckedUntil = holder?.id === instanceId ? holder.seenAt + holder.windowMs : now;
    };
    const deadline = started + body.waitMs;
    /** Claims up to `count` ready jobs as new attempts; none when none is ready. Jobs whose secrets fail are skipped. */
    const claim = async (count: number): Promise<{ ready: boolean; jobs: DequeuedJob[] }> => {
      this.ctx.storage.refuseNewWork();
      const tokens = Array.from({ length: count }, () => newToken(JOB_TOKEN_PREFIX));
      const now = Date.now();
      const claimed = await this.ctx.ledger.claim({
        executorName: body.executorName,
        queues: body.queues,
        tokenHashes: tokens.map(hashToken),
        now,
        order: (queues) => weightedOrder(queues, body.weights ?? {}),
      });
      const jobs: DequeuedJob[] = [];
      const lookups = new Map<string, Promise<StoredSecret[]>>();
      for (const [i, { job, dockerAuthConfig }] of claimed.entries()) {
        metrics.dequeueWait.observe({ result: 'job' }, (now - started) / 1000);
        metrics.queueWait.observe({ queue: job.queue }, Math.max(0, now - job.availableAt) / 1000);
        const payload = await this.withSecrets(job, dockerAuthConfig, body.executorName, tokens[i], lookups);
        if (payload) jobs.push(payload);
      }
      return { ready: claimed.length > 0, jobs };
    };
    while (!signal.aborted) {
      if (body.instanceId !== undefined) await checkName(body.instanceId);
      // Watch before looking, so a job submitted between the look and the wait still wakes us.
      const waiter = wakeups.watchQueues(body.queues);
      try {
        const { ready, jobs } = await claim(body.maxJobs ?? 1);
        if (ready) {
          // Every job claimed failed on its secrets: look again.
          if (jobs.length === 0) continue;
          return jobs;
        }
        const now = Date.now();
        const remaining = deadline - now;
        if (remaining <= 0) break;
        const nextAt = await store.jobs.nextAvailableAt(body.queues);
        await waiter.wait(nextAt === undefined ? remaining : Math.min(remaining, Math.max(0, nextAt - now)), signal);
      } finally {
        // Also when the claim throws (new work refused in a storage fault): a waiter left behind stays on the bus.
        waiter.cancel();
      }
    }
    metrics.dequeueWait.observe({ result: 'empty' }, (Date.now() - started) / 1000);
    return [];
  }

  /**
   * Records an executor's heartbeat and answers which of its jobs to abandon (not known) or cancel; with `waitMs`,
   * held until one of its jobs is canceled or reset (so that reaches it in milliseconds), for `signal`'s life.
   */
  async heartbeat(body: HeartbeatBody, signal: AbortSignal): Promise<HeartbeatResponse> {
    const { wakeups, config, ledger } = this.ctx;
    const now = Date.now();
    const instance =
      body.instanceId === undefined
        ? undefined
        : { id: body.instanceId, windowMs: instanceWindowMs(body.heartbeatIntervalMs, config.stalledJobTimeoutMs) };
    const claim = await ledger.recordExecutor(
      {
        name: body.executorName,
        hostname: body.hostname,
        os: body.os,
        arch: body.arch,
        version: body.version,
        runtime: body.runtime,
        runtimeVersion: body.runtimeVersion ?? null,
        queues: body.queues,
        maxJobs: body.maxJobs ?? null,
        runningJobs: body.jobs.length,
        jobCpus: body.resources?.cpus ?? null,
        jobMemoryBytes: body.resources?.memoryBytes ?? null,
        jobDiskBytes: body.resources?.diskBytes ?? null,
        pid: body.pid ?? null,
      },
      now,
      instance,
    );
    if (!claim.ok) throw this.refused(body.executorName, claim.holder, body.hostname, now);
    if (instance) this.rememberHolder(body.executorName, instance.id, now + instance.windowMs);
    const waiter =
      body.waitMs > 0 && body.jobs.length > 0 ? wakeups.watchInterruptions(body.jobs.map((j) => j.id)) : undefined;
    try {
      let answer = await ledger.keepAlive({ executorName: body.executorName, jobs: body.jobs, now });
      if (waiter && answer.cancelIds.length === 0) {
        // Held open so a cancel reaches the executor in milliseconds rather than at the next beat.
        if (await waiter.wait(body.waitMs, signal)) {
          answer = await ledger.keepAlive({ executorName: body.executorName, jobs: body.jobs, now: Date.now() });
        }
      }
      return answer;
    } finally {
      // Also when the store throws: a waiter left behind stays on the bus.
      waiter?.cancel();
    }
  }

  /** A stopping executor process lets go of its name; a name not this process's is left alone. */
  async release(body: z.output<typeof releaseRequest>): Promise<void> {
    if (this.heldNames.get(body.executorName)?.instanceId === body.instanceId) this.heldNames.delete(body.executorName);
    await this.ctx.ledger.releaseName(body.executorName, body.instanceId);
  }

  /** Stores an attempt's output; a stale attempt is refused (409) and nothing is stored. */
  async appendLogs(attempt: AttemptRecord, entries: LogEntryUpdate[]): Promise<AppendLogsResponse> {
    const [result] = await this.ctx.ledger.appendLogs([{ jobId: attempt.jobId, attempt: attempt.attempt, entries }]);
    return appended(attempt, result);
  }

  /** An attempt's final report; a stale attempt is refused (409). */
  async finish(attempt: AttemptRecord, report: Report): Promise<{ state: string }> {
    const now = Date.now();
    const [result] = await this.ctx.ledger.finish([this.finishRequest(attempt, report, now)]);
    return this.reported(attempt, report.kind, result, now);
  }

  /**
   * Several attempts' appends and reports, each answered as its single-job calls would be. Items of distinct jobs
   * cost the store two commits in all (every append in one, every report in another); two items for one job are
   * taken one at a time, in order, so the second sees what the first did.
   */
  async batch(items: BatchItem[]): Promise<BatchItemResult[]> {
    const ids = new Set(items.map((i) => i.id));
    if (ids.size === items.length) return this.batchOfDistinctJobs(items);
    const results: BatchItemResult[] = [];
    for (const item of items) results.push(...(await this.batchOfDistinctJobs([item])));
    return results;
  }

  private async batchOfDistinctJobs(items: BatchItem[]): Promise<BatchItemResult[]> {
    const { store, ledger } = this.ctx;
    const results: BatchItemResult[] = items.map((item) => ({ id: item.id, status: 200 }));
    const fail = (i: number, err: unknown): void => {
      // An item is refused on its own, as its single-job call would be; the others still count.
      if (!(err instanceof HttpError)) throw err;
      results[i] = {
        id: items[i].id,
        status: err.statusCode,
        error: err.message,
        ...(err.extra.code ? { code: String(err.extra.code) } : {}),
      };
    };
    const found = await store.jobs.findAttemptsByTokens(items.map((item) => hashToken(item.token)));
    const attempts = items.map((item, i): AttemptRecord | undefined => {
      try {
        return jobTokenAttempt(found[i], item.id);
      } catch (err) {
        fail(i, err);
        return undefined;
      }
    });
    const ok = (i: number): boolean => attempts[i] !== undefined && results[i].status === 200;

    const appends = items.flatMap((item, i) => (item.logs && ok(i) ? [i] : []));
    const stored = appends.length
      ? await ledger.appendLogs(
          appends.map((i) => ({ jobId: attempts[i]!.jobId, attempt: attempts[i]!.attempt, entries: items[i].logs! })),
        )
      : [];
    appends.forEach((i, k) => {
      try {
        results[i] = { ...results[i], ...appended(attempts[i]!, stored[k]) } as BatchItemResult;
      } catch (err) {
        fail(i, err);
      }
    });

    const reports = items.flatMap((item, i) => (item.report && ok(i) ? [i] : []));
    const now = Date.now();
    const finished = reports.length
      ? await ledger.finish(reports.map((i) => this.finishRequest(attempts[i]!, items[i].report!, now)))
      : [];
    reports.forEach((i, k) => {
      try {
        results[i] = {
          ...results[i],
          ...this.reported(attempts[i]!, items[i].report!.kind, finished[k], now),
        } as BatchItemResult;
      } catch (err) {
        fail(i, err);
      }
    });
    return results;
  }

  private finishRequest(attempt: AttemptRecord, report: Report, now: number): FinishRequest {
    return {
      jobId: attempt.jobId,
      attempt: attempt.attempt,
      kind: report.kind,
      message: report.message,
      reason: report.reason,
      canceledByExecutor: report.canceled,
      now,
      retryBackoffMs: this.ctx.config.retryBackoffMs,
    };
  }

  /** What follows a recorded report: metrics and the log line; a refused one is a stale attempt. */
  private reported(attempt: AttemptRecord, kind: FinishKind, result: FinishResult, now: number): { state: string } {
    if (!result.ok) throw staleAttempt(attempt.jobId, attempt.attempt, result.job?.state);
    const job = result.job;
    if (result.changed) {
      if (job.state !== 'queued')
        this.ctx.metrics.jobDuration.observe(
          { queue: job.queue, outcome: job.state },
          (now - attempt.startedAt) / 1000,
        );
      this.ctx.log.info(
        { jobId: job.id, attempt: attempt.attempt, report: kind, state: job.state, reason: job.failureReason },
        'job attempt finished',
      );
    }
    return { state: job.state };
  }

  /**
   * The executor's view of a claimed job, with its secrets resolved now (so a changed secret applies to the next
   * attempt). A job whose secrets cannot be had fails at once, with the reason, instead of running without them.
   */
  private async withSecrets(
    job: JobRecord,
    storedCredentials: string | undefined,
    executorName: string,
    token: string,
    lookups: Map<string, Promise<StoredSecret[]>>,
  ): Promise<DequeuedJob | undefined> {
    try {
      const resolved = await this.ctx.secrets.resolveForJob(job, executorName, storedCredentials, lookups);
      return {
        id: job.id,
        attempt: job.attempt,
        token,
        queue: job.queue,
        namespace: job.namespace,
        spec: job.spec,
        ...(Object.keys(resolved.env).length ? { secrets: resolved.env } : {}),
        ...(resolved.dockerAuthConfig ? { dockerAuthConfig: resolved.dockerAuthConfig } : {}),
      };
    } catch (err) {
      if (!(err instanceof MissingSecretError || err instanceof DecryptError)) throw err;
      const message = `cannot run: ${err.message}`;
      this.ctx.log.warn(
        { jobId: job.id, attempt: job.attempt, err: err.message },
        'job failed: its secrets cannot be resolved',
      );
      await this.ctx.ledger.finish(
        [
          {
            jobId: job.id,
            attempt: job.attempt,
            kind: 'fail',
            reason: 'secret_unavailable',
            message,
            now: Date.now(),
            retryBackoffMs: this.ctx.config.retryBackoffMs,
          },
        ],
        'unrunnable',
      );
      return undefined;
    }
  }

  private rememberHolder(name: string, instanceId: string, until: number): void {
    if (this.heldNames.size >= 10_000 && !this.heldNames.has(name)) this.heldNames.clear(); // names that came and went
    this.heldNames.set(name, { instanceId, until });
  }

  /** Another live executor process holds this name: refused, with what to do and when the name would free. */
  private refused(name: string, holder: ExecutorInstance, hostname: string | undefined, now: number): HttpError {
    this.ctx.log.warn(
      { executor: name, holderHost: holder.hostname, host: hostname },
      'refused a second executor process under one name',
    );
    const extra: NameInUseAnswer = {
      code: EXECUTOR_NAME_IN_USE,
      windowMs: holder.windowMs,
      retryAfterMs: Math.max(0, holder.seenAt + holder.windowMs - now),
    };
    return new HttpError(409, nameInUseMessage(name, holder, hostname, now), { ...extra });
  }
}

/** What an append answers; a refused one is a stale attempt. */
function appended(attempt: AttemptRecord, result: LogAppendResult): AppendLogsResponse {
  if (!result.ok) throw staleAttempt(attempt.jobId, attempt.attempt, result.job?.state);
  return { entries: result.entries };
}
