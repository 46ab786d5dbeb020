// The executor protocol (docs/protocol.md): dequeue, heartbeat, and the job-token calls of one attempt.
import type { z } from 'zod';
import {
  EXECUTOR_API_PREFIX, STALE_ATTEMPT, appendLogsRequest, completeRequest, dequeueRequest, errorRequest, failRequest,
  heartbeatRequest, type AppendLogsResponse, type DequeuedJob, type HeartbeatResponse,
} from '../../core/protocol.js';
import { weightedOrder } from '../../core/fairness.js';
import { JOB_TOKEN_PREFIX, hashToken, newToken } from '../../core/tokens.js';
import type { FinishKind, JobRecord } from '../../store/store.js';
import { DecryptError } from '../secrets/keyring.js';
import { MissingSecretError } from '../secrets/secrets.js';
import { HttpError, LARGE_BODY_LIMIT, defineRoute, heldRequestSignal, type AuthContext, type RouteDef } from '../http.js';
import type { ServerContext } from '../context.js';

function jobAttempt(auth: AuthContext) {
  if (auth.kind !== 'job') throw new Error('job route without job auth');
  return auth.attempt;
}

function staleAttempt(jobId: number, attempt: number, state?: string): HttpError {
  return new HttpError(409, `attempt ${attempt} of job ${jobId} is no longer current${state ? ` (job is ${state})` : ''}; stop working on it`, {
    code: STALE_ATTEMPT,
  });
}

export function executorRoutes(ctx: ServerContext): RouteDef<any, any>[] {
  const { store, events, metrics, config, log, secrets } = ctx;

  const finishRoute = (kind: FinishKind, body: z.ZodType<{ message?: string; canceled?: boolean }>, summary: string) =>
    defineRoute<{ message?: string; canceled?: boolean }>({
      method: 'POST', url: `${EXECUTOR_API_PREFIX}/jobs/:id/${kind}`, auth: 'job', summary, body,
      response: '{ state }: the job state after this report',
      async handler({ auth, body: p }) {
        const attempt = jobAttempt(auth);
        const now = Date.now();
        const result = await store.finish({
          jobId: attempt.jobId, attempt: attempt.attempt, kind, message: p.message, canceledByExecutor: p.canceled,
          now, retryBackoffMs: config.retryBackoffMs,
        });
        if (!result.ok) throw staleAttempt(attempt.jobId, attempt.attempt, result.job?.state);
        const job = result.job;
        if (result.changed) {
          events.jobChanged(job.id);
          if (job.state === 'queued') events.queueChanged(job.queue);
          else metrics.jobDuration.observe({ queue: job.queue, outcome: job.state }, (now - attempt.startedAt) / 1000);
          log.info({ jobId: job.id, attempt: attempt.attempt, report: kind, state: job.state }, 'job attempt finished');
        }
        return { state: job.state };
      },
    });

  /**
   * The executor's view of a claimed job, with its secrets resolved now (so a changed secret applies to the next
   * attempt). A job whose secrets cannot be had fails at once, with the reason, instead of running without them.
   */
  async function withSecrets(job: JobRecord, executorName: string, token: string): Promise<DequeuedJob | undefined> {
    try {
      const resolved = await secrets.resolveForJob(job, executorName, await store.getDockerAuthConfig(job.id));
      return {
        id: job.id, attempt: job.attempt, token, queue: job.queue, namespace: job.namespace, spec: job.spec,
        ...(Object.keys(resolved.env).length ? { secrets: resolved.env } : {}),
        ...(resolved.dockerAuthConfig ? { dockerAuthConfig: resolved.dockerAuthConfig } : {}),
      };
    } catch (err) {
      if (!(err instanceof MissingSecretError || err instanceof DecryptError)) throw err;
      const message = `cannot run: ${err.message}`;
      log.warn({ jobId: job.id, attempt: job.attempt, err: err.message }, 'job failed: its secrets cannot be resolved');
      const result = await store.finish({ jobId: job.id, attempt: job.attempt, kind: 'fail', message, now: Date.now(), retryBackoffMs: config.retryBackoffMs });
      if (result.ok) events.jobChanged(job.id);
      return undefined;
    }
  }

  return [
    defineRoute({
      method: 'POST', url: `${EXECUTOR_API_PREFIX}/dequeue`, auth: 'executor', body: dequeueRequest,
      summary: 'Take the next job from one of the named queues, waiting up to waitMs for one to arrive',
      response: 'The job (id, attempt, token, queue, namespace, spec)',
      otherResponses: { 204: 'No job arrived within waitMs' },
      async handler({ body, reply }) {
        const started = Date.now();
        const deadline = started + body.waitMs;
        const closed = heldRequestSignal(reply, ctx.closing);
        while (!closed.aborted) {
          // Watch before looking, so a job submitted between the look and the wait still wakes us.
          const waiter = events.watchQueues(body.queues);
          const token = newToken(JOB_TOKEN_PREFIX);
          const now = Date.now();
          const queues = weightedOrder(body.queues, body.weights ?? {});
          const job = await store.dequeue({ executorName: body.executorName, queues, tokenHash: hashToken(token), now });
          if (job) {
            waiter.cancel();
            metrics.dequeueWait.observe({ result: 'job' }, (now - started) / 1000);
            metrics.queueWait.observe({ queue: job.queue }, Math.max(0, now - job.availableAt) / 1000);
            events.jobChanged(job.id);
            const payload = await withSecrets(job, body.executorName, token);
            if (payload) return payload;
            continue;
          }
          const remaining = deadline - now;
          if (remaining <= 0) {
            waiter.cancel();
            break;
          }
          const nextAt = await store.nextAvailableAt(body.queues);
          await waiter.wait(nextAt === undefined ? remaining : Math.min(remaining, Math.max(0, nextAt - now)), closed);
        }
        metrics.dequeueWait.observe({ result: 'empty' }, (Date.now() - started) / 1000);
        return reply.code(204).send();
      },
    }),
    defineRoute({
      method: 'POST', url: `${EXECUTOR_API_PREFIX}/heartbeat`, auth: 'executor', body: heartbeatRequest,
      summary: 'Register the executor, keep its jobs alive, and learn which to abandon (not known) or cancel',
      response: '{ knownIds, cancelIds }',
      async handler({ body, reply }): Promise<HeartbeatResponse> {
        const now = Date.now();
        await store.upsertExecutor(
          {
            name: body.executorName, hostname: body.hostname, os: body.os, arch: body.arch, version: body.version,
            runtime: body.runtime, runtimeVersion: body.runtimeVersion ?? null, queues: body.queues,
            maxJobs: body.maxJobs ?? null, runningJobs: body.jobs.length,
            jobCpus: body.resources?.cpus ?? null, jobMemoryBytes: body.resources?.memoryBytes ?? null,
          },
          now,
        );
        const waiter = body.waitMs > 0 && body.jobs.length > 0 ? events.watchInterruptions(body.jobs.map((j) => j.id)) : undefined;
        let answer = await store.heartbeat({ executorName: body.executorName, jobs: body.jobs, now });
        if (waiter && answer.cancelIds.length === 0) {
          // Held open so a cancel reaches the executor in milliseconds rather than at the next beat.
          if (await waiter.wait(body.waitMs, heldRequestSignal(reply, ctx.closing))) {
            answer = await store.heartbeat({ executorName: body.executorName, jobs: body.jobs, now: Date.now() });
          }
        } else waiter?.cancel();
        return answer;
      },
    }),
    defineRoute({
      method: 'POST', url: `${EXECUTOR_API_PREFIX}/jobs/:id/logs`, auth: 'job', body: appendLogsRequest,
      bodyLimit: LARGE_BODY_LIMIT,
      summary: "Append output to the attempt's log entries; idempotent by offset",
      response: '{ entries: [{ index, length }] }: stored output length per entry',
      async handler({ auth, body }): Promise<AppendLogsResponse> {
        const attempt = jobAttempt(auth);
        const job = await store.getJob(attempt.jobId);
        if (!job || job.state !== 'processing' || job.attempt !== attempt.attempt) throw staleAttempt(attempt.jobId, attempt.attempt, job?.state);
        const entries = await store.appendLogs(attempt.jobId, attempt.attempt, body.entries);
        events.jobChanged(attempt.jobId);
        return { entries };
      },
    }),
    finishRoute('complete', completeRequest, 'Report that every step succeeded'),
    finishRoute('error', errorRequest, 'Report a retryable error (retried with backoff while attempts remain)'),
    finishRoute('fail', failRequest, 'Report a final failure, or with canceled: true that the job was stopped on request'),
  ];
}
