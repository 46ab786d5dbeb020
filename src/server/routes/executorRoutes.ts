// The executor protocol (docs/protocol.md): dequeue, heartbeat, and the job-token calls of one attempt.
import type { z } from 'zod';
import { instanceWindowMs, mayUseName, nameInUseMessage, type ExecutorInstance } from '../../core/executorNames.js';
import {
  EXECUTOR_API_PREFIX,
  EXECUTOR_NAME_IN_USE,
  STALE_ATTEMPT,
  appendLogsRequest,
  batchRequest,
  completeRequest,
  dequeueRequest,
  errorRequest,
  failRequest,
  heartbeatRequest,
  releaseRequest,
  type AppendLogsResponse,
  type BatchItemResult,
  type BatchRequest,
  type BatchResponse,
  type DequeuedJob,
  type HeartbeatResponse,
  type NameInUseAnswer,
} from '../../core/protocol.js';
import type { FailureReason } from '../../core/failureReasons.js';
import { weightedOrder } from '../../core/fairness.js';
import { JOB_TOKEN_PREFIX, hashToken, newToken } from '../../core/tokens.js';
import type {
  AttemptRecord,
  FinishKind,
  FinishRequest,
  FinishResult,
  JobRecord,
  LogAppendResult,
} from '../../store/store.js';
import { DecryptError } from '../secrets/keyring.js';
import { MissingSecretError } from '../secrets/secrets.js';
import type { StoredSecret } from '../../store/accounts.js';
import {
  HttpError,
  LARGE_BODY_LIMIT,
  defineRoute,
  jobTokenAttempt,
  heldRequestSignal,
  type AuthContext,
  type RouteDef,
} from '../http.js';
import type { ServerContext } from '../context.js';

function jobAttempt(auth: AuthContext) {
  if (auth.kind !== 'job') throw new Error('job route without job auth');
  return auth.attempt;
}

function staleAttempt(jobId: number, attempt: number, state?: string): HttpError {
  return new HttpError(
    409,
    `attempt ${attempt} of job ${jobId} is no longer current${state ? ` (job is ${state})` : ''}; stop working on it`,
    {
      code: STALE_ATTEMPT,
    },
  );
}

const NAME_IN_USE_RESPONSE =
  'executor_name_in_use: another live executor process holds executorName (the message says what to do)';

/** An attempt's final report: the body of `/complete`, `/error` or `/fail`, with which it is. */
type Report = { kind: FinishKind; message?: string; reason?: FailureReason; canceled?: boolean };
type ReportBody = Omit<Report, 'kind'>;

export function executorRoutes(ctx: ServerContext): RouteDef<any, any>[] {
  const { store, events, metrics, config, log, secrets } = ctx;

  /**
   * Until when each name is surely held by the process this replica last accepted a heartbeat from: nobody can take
   * it before that process's window runs out, so its dequeues need not read the store (one query per dequeue).
   */
  const heldNames = new Map<string, { instanceId: string; until: number }>();
  const rememberHolder = (name: string, instanceId: string, until: number): void => {
    if (heldNames.size >= 10_000 && !heldNames.has(name)) heldNames.clear(); // names that came and went
    heldNames.set(name, { instanceId, until });
  };

  /** Another live executor process holds this name: refused, with what to do and when the name would free. */
  function refused(name: string, holder: ExecutorInstance, hostname: string | undefined, now: number): HttpError {
    log.warn(
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

  /** What follows a recorded report: events, metrics and the log line; a refused one is a stale attempt. */
  function reported(attempt: AttemptRecord, kind: FinishKind, result: FinishResult, now: number): { state: string } {
    if (!result.ok) throw staleAttempt(attempt.jobId, attempt.attempt, result.job?.state);
    const job = result.job;
    if (result.changed) {
      events.jobChanged(job.id);
      if (job.state === 'queued') events.queueChanged(job.queue);
      else metrics.jobDuration.observe({ queue: job.queue, outcome: job.state }, (now - attempt.startedAt) / 1000);
      log.info(
        { jobId: job.id, attempt: attempt.attempt, report: kind, state: job.state, reason: job.failureReason },
        'job attempt finished',
      );
    }
    return { state: job.state };
  }

  const finishRequest = (attempt: AttemptRecord, report: Report, now: number): FinishRequest => ({
    jobId: attempt.jobId,
    attempt: attempt.attempt,
    kind: report.kind,
    message: report.message,
    reason: report.reason,
    canceledByExecutor: report.canceled,
    now,
    retryBackoffMs: config.retryBackoffMs,
  });

  /** A final report of one attempt (the `/complete`, `/error` and `/fail` routes). */
  async function finishAttempt(attempt: AttemptRecord, report: Report): Promise<{ state: string }> {
    const now = Date.now();
    return reported(attempt, report.kind, await store.finish(finishRequest(attempt, report, now)), now);
  }

  /** What follows an append: followers hear of it; a refused one is a stale attempt. */
  function appended(attempt: AttemptRecord, result: LogAppendResult): AppendLogsResponse {
    if (!result.ok) throw staleAttempt(attempt.jobId, attempt.attempt, result.job?.state);
    events.jobChanged(attempt.jobId);
    return { entries: result.entries };
  }

  /**
   * `/jobs/batch`: every item's appends in one transaction, then every report in another, so a batch costs the
   * store two commits however many jobs it carries. Each item is answered as its single-job calls would be.
   */
  async function batch(items: z.output<typeof batchRequest>['items']): Promise<BatchItemResult[]> {
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
    const found = await store.findAttemptsByTokens(items.map((item) => hashToken(item.token)));
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
      ? await store.appendLogsMany(
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
      ? await store.finishMany(reports.map((i) => finishRequest(attempts[i]!, items[i].report!, now)))
      : [];
    reports.forEach((i, k) => {
      try {
        results[i] = {
          ...results[i],
          ...reported(attempts[i]!, items[i].report!.kind, finished[k], now),
        } as BatchItemResult;
      } catch (err) {
        fail(i, err);
      }
    });
    return results;
  }

  const finishRoute = (kind: FinishKind, body: z.ZodType<ReportBody>, summary: string) =>
    defineRoute<ReportBody>({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/jobs/:id/${kind}`,
      auth: 'job',
      summary,
      body,
      response: '{ state }: the job state after this report',
      handler: ({ auth, body: p }) => finishAttempt(jobAttempt(auth), { ...p, kind }),
    });

  /**
   * The executor's view of a claimed job, with its secrets resolved now (so a changed secret applies to the next
   * attempt). A job whose secrets cannot be had fails at once, with the reason, instead of running without them.
   */
  async function withSecrets(
    job: JobRecord,
    storedCredentials: string | undefined,
    executorName: string,
    token: string,
    lookups: Map<string, Promise<StoredSecret[]>>,
  ): Promise<DequeuedJob | undefined> {
    try {
      const resolved = await secrets.resolveForJob(job, executorName, storedCredentials, lookups);
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
      log.warn({ jobId: job.id, attempt: job.attempt, err: err.message }, 'job failed: its secrets cannot be resolved');
      const result = await store.finish({
        jobId: job.id,
        attempt: job.attempt,
        kind: 'fail',
        reason: 'secret_unavailable',
        message,
        now: Date.now(),
        retryBackoffMs: config.retryBackoffMs,
      });
      if (result.ok) events.jobChanged(job.id);
      return undefined;
    }
  }

  return [
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/dequeue`,
      auth: 'executor',
      body: dequeueRequest,
      summary: 'Take the next job from one of the named queues, waiting up to waitMs for one to arrive',
      response: 'The job (id, attempt, token, queue, namespace, spec)',
      otherResponses: { 204: 'No job arrived within waitMs', 409: NAME_IN_USE_RESPONSE },
      async handler({ body, reply }) {
        const started = Date.now();
        let nameCheckedUntil = 0;
        /** A process whose name went to another one (it froze or was cut off) must not take jobs under it. */
        const checkName = async (instanceId: string): Promise<void> => {
          const now = Date.now();
          if (now < nameCheckedUntil) return;
          const known = heldNames.get(body.executorName);
          if (known?.instanceId === instanceId && now < known.until) {
            nameCheckedUntil = known.until;
            return;
          }
          const holder = await store.executorInstance(body.executorName);
          if (!mayUseName(holder, instanceId, now)) throw refused(body.executorName, holder!, body.hostname, now);
          // Nobody can take the name before its holder's window runs out, so a held request need not look again
          // until then; a process that does not hold it yet looks before every claim.
          nameCheckedUntil = holder?.id === instanceId ? holder.seenAt + holder.windowMs : now;
        };
        const deadline = started + body.waitMs;
        const closed = heldRequestSignal(reply, ctx.closing);
        /** Claims up to `count` ready jobs as new attempts; none when none is ready. Jobs whose secrets fail are skipped. */
        const claim = async (count: number): Promise<{ ready: boolean; jobs: DequeuedJob[] }> => {
          ctx.storage.refuseNewWork();
          const tokens = Array.from({ length: count }, () => newToken(JOB_TOKEN_PREFIX));
          const now = Date.now();
          const claimed = await store.dequeueMany({
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
            events.jobChanged(job.id);
            const payload = await withSecrets(job, dockerAuthConfig, body.executorName, tokens[i], lookups);
            if (payload) jobs.push(payload);
          }
          return { ready: claimed.length > 0, jobs };
        };
        while (!closed.aborted) {
          if (body.instanceId !== undefined) await checkName(body.instanceId);
          // Watch before looking, so a job submitted between the look and the wait still wakes us.
          const waiter = events.watchQueues(body.queues);
          try {
            const { ready, jobs } = await claim(body.maxJobs ?? 1);
            if (ready) {
              // Every job claimed failed on its secrets: look again.
              if (jobs.length === 0) continue;
              return body.maxJobs === undefined ? jobs[0] : { jobs };
            }
            const now = Date.now();
            const remaining = deadline - now;
            if (remaining <= 0) break;
            const nextAt = await store.nextAvailableAt(body.queues);
            await waiter.wait(
              nextAt === undefined ? remaining : Math.min(remaining, Math.max(0, nextAt - now)),
              closed,
            );
          } finally {
            // Also when the claim throws (new work refused in a storage fault): a waiter left behind stays on the bus.
            waiter.cancel();
          }
        }
        metrics.dequeueWait.observe({ result: 'empty' }, (Date.now() - started) / 1000);
        return reply.code(204).send();
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/heartbeat`,
      auth: 'executor',
      body: heartbeatRequest,
      summary: 'Register the executor, keep its jobs alive, and learn which to abandon (not known) or cancel',
      response: '{ knownIds, cancelIds }',
      otherResponses: { 409: NAME_IN_USE_RESPONSE },
      async handler({ body, reply }): Promise<HeartbeatResponse> {
        const now = Date.now();
        const instance =
          body.instanceId === undefined
            ? undefined
            : { id: body.instanceId, windowMs: instanceWindowMs(body.heartbeatIntervalMs, config.stalledJobTimeoutMs) };
        const claim = await store.upsertExecutor(
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
          },
          now,
          instance,
        );
        if (!claim.ok) throw refused(body.executorName, claim.holder, body.hostname, now);
        if (instance) rememberHolder(body.executorName, instance.id, now + instance.windowMs);
        const waiter =
          body.waitMs > 0 && body.jobs.length > 0 ? events.watchInterruptions(body.jobs.map((j) => j.id)) : undefined;
        try {
          let answer = await store.heartbeat({ executorName: body.executorName, jobs: body.jobs, now });
          if (waiter && answer.cancelIds.length === 0) {
            // Held open so a cancel reaches the executor in milliseconds rather than at the next beat.
            if (await waiter.wait(body.waitMs, heldRequestSignal(reply, ctx.closing))) {
              answer = await store.heartbeat({ executorName: body.executorName, jobs: body.jobs, now: Date.now() });
            }
          }
          return answer;
        } finally {
          // Also when the store throws: a waiter left behind stays on the bus.
          waiter?.cancel();
        }
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/release`,
      auth: 'executor',
      body: releaseRequest,
      summary: 'A stopping executor process lets go of its name, so that its successor need not wait out its window',
      response: "{}: released, or the name was not this process's to release",
      async handler({ body }) {
        if (heldNames.get(body.executorName)?.instanceId === body.instanceId) heldNames.delete(body.executorName);
        await store.releaseExecutorName(body.executorName, body.instanceId);
        return {};
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/jobs/:id/logs`,
      auth: 'job',
      body: appendLogsRequest,
      bodyLimit: LARGE_BODY_LIMIT,
      summary: "Append output to the attempt's log entries; idempotent by offset",
      response: '{ entries: [{ index, length }] }: stored output length per entry',
      async handler({ auth, body }): Promise<AppendLogsResponse> {
        const attempt = jobAttempt(auth);
        const [result] = await store.appendLogsMany([
          { jobId: attempt.jobId, attempt: attempt.attempt, entries: body.entries },
        ]);
        return appended(attempt, result);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/jobs/batch`,
      auth: 'executor',
      body: batchRequest,
      bodyLimit: LARGE_BODY_LIMIT,
      summary: "Several attempts' log appends and final reports at once, each item with its own job token and answer",
      response:
        '{ items: [{ id, status, entries?, state?, error?, code? }] }: per item, what the single-job routes answer',
      async handler({ body }): Promise<BatchResponse> {
        // Two items for one job are taken one at a time, in order, so the second sees what the first did.
        const ids = new Set(body.items.map((i) => i.id));
        if (ids.size === body.items.length) return { items: await batch(body.items) };
        const items: BatchItemResult[] = [];
        for (const item of body.items) items.push(...(await batch([item])));
        return { items };
      },
    }),
    finishRoute('complete', completeRequest, 'Report that every step succeeded'),
    finishRoute(
      'error',
      errorRequest,
      'Report a retryable error (retried with backoff while attempts remain); a reason decides retry or fail',
    ),
    finishRoute(
      'fail',
      failRequest,
      'Report a final failure, or with canceled: true that the job was stopped on request; a reason decides retry or fail',
    ),
  ];
}
