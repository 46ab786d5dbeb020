// The client API's job routes: submit, inspect, follow, cancel and retry jobs; list executors and queues. The work
// is the JobService's (jobs/jobService.ts) and the log readers' (jobs/jobLogs.ts); these parse and answer.
import { Readable } from 'node:stream';
import { z } from 'zod';
import { jobSpec } from '../../core/jobSpec.js';
import { JOB_STATES } from '../../core/jobState.js';
import { executorCompatibility } from '../../core/compatibility.js';
import { CLIENT_API_PREFIX } from '../../core/protocol.js';
import { responses } from '../../core/api.js';
import { VERSION } from '../../core/version.js';
import { EXECUTOR_ONLINE_WINDOW_MS } from '../metrics.js';
import { LARGE_BODY_LIMIT, defineRoute, parseId, principal, type RouteDef } from '../http.js';
import type { ServerContext } from '../context.js';
import { logsBody, streamJob } from '../jobs/jobLogs.js';
import type { JobService } from '../jobs/jobService.js';

const listQuery = z.strictObject({
  queue: z.string().optional(),
  state: z.enum(JOB_STATES).optional(),
  namespace: z.string().optional(),
  before: z.coerce.number().int().positive().optional().describe('Page: only jobs with a smaller id'),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});

const attemptQuery = z.strictObject({
  attempt: z.coerce.number().int().positive().optional().describe('Which attempt; default the latest'),
});

/** Most jobs one `POST /jobs/batch` submits. */
const MAX_SUBMIT_BATCH = 1000;

const submitBatch = z.strictObject({
  jobs: z
    .array(jobSpec)
    .min(1, 'name at least one job')
    .max(MAX_SUBMIT_BATCH, `at most ${MAX_SUBMIT_BATCH} jobs per request; send more requests`),
});

export function jobRoutes(ctx: ServerContext, jobs: JobService): RouteDef<any, any>[] {
  const { store } = ctx;
  return [
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs`,
      auth: 'client',
      body: jobSpec,
      bodyName: 'job spec',
      bodyLimit: LARGE_BODY_LIMIT,
      summary: 'Submit a job (JSON, or YAML with Content-Type application/yaml); see docs/job-spec.md',
      response: 'the queued job',
      responseSchema: responses.job,
      status: 201,
      async handler({ body, reply, auth }) {
        const [job] = await jobs.submit(principal(auth), [body]);
        reply.code(201);
        return { job };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs/batch`,
      auth: 'client',
      body: submitBatch,
      bodyName: 'job batch',
      bodyLimit: LARGE_BODY_LIMIT,
      summary: `Submit up to ${MAX_SUBMIT_BATCH} jobs at once, all or none (JSON or YAML: { jobs: [spec, ...] })`,
      response: 'the queued jobs, in the order given',
      responseSchema: responses.jobs,
      status: 201,
      async handler({ body, reply, auth }) {
        // Every job is checked before any is stored: one bad job refuses the request, naming it (jobs[i].field).
        const queued = await jobs.submit(principal(auth), body.jobs, (i) => `jobs[${i}].`);
        reply.code(201);
        return { jobs: queued };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs`,
      auth: 'client',
      query: listQuery,
      summary: 'List the jobs of your namespaces (site admins: all), newest first',
      response: 'a page of jobs; pass nextBefore as before for the next one',
      responseSchema: responses.jobPage,
      async handler({ query, auth }) {
        const page = await store.jobs.listJobs({
          queue: query.queue,
          state: query.state,
          namespace: query.namespace,
          namespaces: principal(auth).visibleNamespaces(),
          beforeId: query.before,
          limit: query.limit,
        });
        return { jobs: page, nextBefore: page.length === query.limit ? page[page.length - 1].id : null };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs/:id`,
      auth: 'client',
      summary: 'A job with its attempts',
      response:
        "{ job, attempts }: job.failureReason and each attempt's failureReason say why it did not complete (null when it did, or still runs; docs/api.md)",
      responseSchema: responses.jobWithAttempts,
      async handler({ params, auth }) {
        const job = await jobs.get(principal(auth), parseId(params.id));
        return { job, attempts: await store.jobs.listAttempts(job.id) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs/:id/logs`,
      auth: 'client',
      query: attemptQuery,
      summary: "An attempt's log entries with their whole output",
      response: 'the log entries with their output, streamed',
      responseSchema: responses.jobLogs,
      async handler({ params, query, reply, auth }) {
        const job = await jobs.get(principal(auth), parseId(params.id));
        const attempt = query.attempt ?? job.attempt;
        // Streamed (the same JSON as one object would give): a long log is never whole in the server's memory.
        return reply
          .type('application/json; charset=utf-8')
          .send(Readable.from(logsBody(store, job.id, attempt), { objectMode: false }));
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs/:id/logs/stream`,
      auth: 'client',
      query: attemptQuery,
      summary: 'Follow a job live (Server-Sent Events): attempt, entry, output, state and end events',
      response: 'text/event-stream',
      async handler({ params, query, reply, auth }) {
        const job = await jobs.get(principal(auth), parseId(params.id));
        await streamJob(ctx, job.id, query.attempt, reply);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs/:id/cancel`,
      auth: 'client',
      summary: 'Cancel a job: queued jobs at once, running jobs as soon as their executor stops them',
      response: 'the job, canceled or marked for its executor to stop',
      responseSchema: responses.job,
      otherResponses: { 409: 'The job already finished' },
      async handler({ params, auth }) {
        return { job: await jobs.cancel(principal(auth), parseId(params.id)) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs/:id/retry`,
      auth: 'client',
      summary: 'Queue a finished job again (its attempts history is kept)',
      response: 'the job, queued again',
      responseSchema: responses.job,
      otherResponses: { 409: 'The job has not finished' },
      async handler({ params, auth }) {
        return { job: await jobs.retry(principal(auth), parseId(params.id)) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/executors`,
      auth: 'client',
      summary: 'Executors that have registered by heartbeat (site admins)',
      response: 'the executors, with whether each is active and its version compatibility',
      responseSchema: responses.executors,
      async handler({ auth }) {
        principal(auth).requireSiteAdmin('list executors');
        const since = Date.now() - EXECUTOR_ONLINE_WINDOW_MS;
        const executors = (await store.executors.listExecutors()).map((e) => {
          const active = e.lastSeenAt >= since;
          // Only an executor that is running now has a version worth comparing; a gone one says nothing.
          return { ...e, active, compatibility: active ? executorCompatibility(e.version, VERSION) : null };
        });
        return { executors, serverVersion: VERSION };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/queues`,
      auth: 'client',
      summary: 'Queued and running jobs per queue, and the jobs that completed or failed in the last hour',
      response: 'per queue: queued, processing, oldest queued, completed and failed in the last hour',
      responseSchema: responses.queues,
      async handler() {
        return { queues: await store.jobs.queueStats(Date.now()) };
      },
    }),
  ];
}
