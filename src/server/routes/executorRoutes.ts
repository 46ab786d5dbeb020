// The executor protocol's routes (docs/protocol.md): dequeue, heartbeat, and the job-token calls of one attempt.
// The work is the DispatchService's (dispatch/dispatchService.ts); these parse and answer.
import { z } from 'zod';
import {
  EXECUTOR_API_PREFIX,
  appendLogsRequest,
  batchRequest,
  completeRequest,
  dequeueRequest,
  errorRequest,
  failRequest,
  heartbeatRequest,
  releaseRequest,
  appendLogsResponse,
  batchResponse,
  dequeueBatchResponse,
  dequeuedJob,
  heartbeatResponse,
  reportResponse,
  type AppendLogsResponse,
  type BatchResponse,
  type HeartbeatResponse,
} from '../../core/protocol.js';
import type { FinishKind } from '../../store/store.js';
import type { ServerContext } from '../context.js';
import type { DispatchService, Report } from '../dispatch/dispatchService.js';
import { LARGE_BODY_LIMIT, defineRoute, heldRequestSignal, type AuthContext, type RouteDef } from '../http.js';

function jobAttempt(auth: AuthContext) {
  if (auth.kind !== 'job') throw new Error('job route without job auth');
  return auth.attempt;
}

const NAME_IN_USE_RESPONSE =
  'executor_name_in_use: another live executor process holds executorName (the message says what to do)';

type ReportBody = Omit<Report, 'kind'>;

export function executorRoutes(ctx: ServerContext, dispatch: DispatchService): RouteDef<any, any>[] {
  const finishRoute = (kind: FinishKind, body: z.ZodType<ReportBody>, summary: string) =>
    defineRoute<ReportBody>({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/jobs/:id/${kind}`,
      auth: 'job',
      summary,
      body,
      response: 'the job state after this report',
      responseSchema: reportResponse,
      handler: ({ auth, body: p }) => dispatch.finish(jobAttempt(auth), { ...p, kind }),
    });

  return [
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/dequeue`,
      auth: 'executor',
      body: dequeueRequest,
      summary: 'Take the next job from one of the named queues, waiting up to waitMs for one to arrive',
      response: 'the job, or with maxJobs { jobs }: each a new attempt with its own token',
      responseSchema: z.union([dequeuedJob, dequeueBatchResponse]),
      otherResponses: { 204: 'No job arrived within waitMs', 409: NAME_IN_USE_RESPONSE },
      async handler({ body, reply }) {
        const jobs = await dispatch.dequeue(body, heldRequestSignal(reply, ctx.closing));
        if (!jobs.length) return reply.code(204).send();
        return body.maxJobs === undefined ? jobs[0] : { jobs };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/heartbeat`,
      auth: 'executor',
      body: heartbeatRequest,
      summary: 'Register the executor, keep its jobs alive, and learn which to abandon (not known) or cancel',
      response: 'which of its jobs the executor still holds, and which to cancel',
      responseSchema: heartbeatResponse,
      otherResponses: { 409: NAME_IN_USE_RESPONSE },
      async handler({ body, reply }): Promise<HeartbeatResponse> {
        return dispatch.heartbeat(body, heldRequestSignal(reply, ctx.closing));
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/release`,
      auth: 'executor',
      body: releaseRequest,
      summary: 'A stopping executor process lets go of its name, so that its successor need not wait out its window',
      response: "released, or the name was not this process's to release",
      responseSchema: z.object({}),
      async handler({ body }) {
        await dispatch.release(body);
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
      response: 'the stored output length per entry',
      responseSchema: appendLogsResponse,
      async handler({ auth, body }): Promise<AppendLogsResponse> {
        return dispatch.appendLogs(jobAttempt(auth), body.entries);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${EXECUTOR_API_PREFIX}/jobs/batch`,
      auth: 'executor',
      body: batchRequest,
      bodyLimit: LARGE_BODY_LIMIT,
      summary: "Several attempts' log appends and final reports at once, each item with its own job token and answer",
      response: 'per item, what the single-job routes answer',
      responseSchema: batchResponse,
      async handler({ body }): Promise<BatchResponse> {
        return { items: await dispatch.batch(body.items) };
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
