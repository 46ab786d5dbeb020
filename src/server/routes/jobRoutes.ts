// The client API: submit, inspect, follow, cancel and retry jobs; list executors and queues.
import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
import { z } from 'zod';
import { jobSpec, type JobSpec } from '../../core/jobSpec.js';
import { loosestLimits, resourceIssues } from '../../core/resources.js';
import { JOB_STATES, isTerminal } from '../../core/jobState.js';
import { executorCompatibility } from '../../core/compatibility.js';
import { CLIENT_API_PREFIX } from '../../core/protocol.js';
import { VERSION } from '../../core/version.js';
import type { ExecutorRecord, JobRecord, LogChunk, LogEntryRecord, NewJob, Store } from '../../store/store.js';
import { EXECUTOR_ONLINE_WINDOW_MS } from '../metrics.js';
import { requireNamespaceExists, type Principal } from '../access.js';
import {
  HttpError,
  LARGE_BODY_LIMIT,
  badRequest,
  defineRoute,
  heldRequestSignal,
  parseId,
  principal,
  type RouteDef,
} from '../http.js';
import type { Secrets } from '../secrets/secrets.js';
import type { ServerContext } from '../context.js';

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

/** The job, if it exists and `me` may see it; another namespace's job answers exactly like a missing one. */
async function requireJob(store: Store, rawId: string | undefined, me: Principal): Promise<JobRecord> {
  const id = parseId(rawId);
  const job = await store.getJob(id);
  if (!job || !me.mayUse(job.namespace)) throw new HttpError(404, `no job ${id}`);
  return job;
}

/** Every secret a job names must exist in its namespace or in global when it is submitted. */
async function requireSecrets(
  secrets: Secrets,
  namespace: string,
  names: string[],
  fieldPrefix: string,
): Promise<void> {
  const missing = new Set(await secrets.missing(namespace, names));
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

const SSE_KEEPALIVE_MS = 15_000;
/**
 * Chunks read from the store at a time: a chunk is what one append stored for an entry (at most 2M characters from
 * an executor), so a page stays in the tens of megabytes however long the log is.
 */
const CHUNKS_PER_PAGE = 16;

/** The stored chunks of an attempt's log after `afterSeq`, a page at a time, grouped by entry in order. */
async function* chunkPages(
  store: Store,
  jobId: number,
  attempt: number,
  afterSeq: number,
): AsyncGenerator<{ byEntry: Map<number, LogChunk[]>; lastSeq: number }> {
  let lastSeq = afterSeq;
  for (;;) {
    const batch = await store.readLogChunks(jobId, attempt, lastSeq, CHUNKS_PER_PAGE);
    const byEntry = new Map<number, LogChunk[]>();
    for (const chunk of batch) {
      const list = byEntry.get(chunk.index);
      if (list) list.push(chunk);
      else byEntry.set(chunk.index, [chunk]);
    }
    if (batch.length) lastSeq = batch[batch.length - 1].seq;
    yield { byEntry, lastSeq };
    if (batch.length < CHUNKS_PER_PAGE) return;
  }
}

/**
 * The body of GET /logs, `{"attempt":N,"entries":[{...entry, "out": "..."}]}`, produced a page of chunks at a time so
 * that a log of any size costs the server a page of memory, not the whole log. Each entry's `out` is its output up
 * to the `length` listed (output stored while the answer is being sent is left for the next request).
 */
async function* logsBody(store: Store, jobId: number, attempt: number): AsyncGenerator<string> {
  const entries = await store.listLogEntries(jobId, attempt);
  yield `{"attempt":${JSON.stringify(attempt)},"entries":[`;
  for (const [i, entry] of entries.entries()) {
    // The entry as JSON without its closing brace, then "out" written piece by piece (each piece escaped alone:
    // JSON strings concatenate, and a chunk never ends inside a surrogate pair).
    yield `${i ? ',' : ''}${JSON.stringify(entry).slice(0, -1)},"out":"`;
    let written = 0;
    let afterSeq = 0;
    while (written < entry.length) {
      const page = await store.readLogChunks(jobId, attempt, afterSeq, CHUNKS_PER_PAGE, entry.index);
      for (const chunk of page) {
        const data =
          chunk.offset + chunk.data.length > entry.length
            ? chunk.data.slice(0, entry.length - chunk.offset)
            : chunk.data;
        if (data) yield JSON.stringify(data).slice(1, -1);
        written = chunk.offset + data.length;
      }
      if (page.length < CHUNKS_PER_PAGE) break;
      afterSeq = page[page.length - 1].seq;
    }
    yield '"}';
  }
  yield ']}';
}

/** Executors heard from this recently speak for their queue's limits. */
const LIMITS_WINDOW_MS = 10 * 60_000;

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

/** Most jobs one `POST /jobs/batch` submits. */
const MAX_SUBMIT_BATCH = 1000;

const submitBatch = z.strictObject({
  jobs: z
    .array(jobSpec)
    .min(1, 'name at least one job')
    .max(MAX_SUBMIT_BATCH, `at most ${MAX_SUBMIT_BATCH} jobs per request; send more requests`),
});

/** What one submit request looks up in the store, each once however many jobs it carries. */
interface Lookups {
  /** Namespaces found to exist. */
  namespaces: Set<string>;
  executors(): Promise<ExecutorRecord[]>;
}

function lookupsFor(store: Store): Lookups {
  let executors: Promise<ExecutorRecord[]> | undefined;
  return { namespaces: new Set(), executors: () => (executors ??= store.listExecutors()) };
}

/**
 * A submitted spec as the store takes it: in the submitter's own namespace unless it names another of theirs, which
 * must exist, with its secrets present and its resources within what the queue's executors allow. `fieldPrefix`
 * places errors in a batch ("jobs[3].").
 */
async function prepareSubmission(
  ctx: ServerContext,
  me: Principal,
  body: z.output<typeof jobSpec>,
  fieldPrefix: string,
  lookups: Lookups,
): Promise<NewJob> {
  const { store, secrets } = ctx;
  const { dockerAuthConfig, ...given } = body;
  const spec = { ...given, namespace: given.namespace ?? `user:${me.name}` };
  me.requireNamespace(spec.namespace, `${fieldPrefix}namespace`);
  if (!lookups.namespaces.has(spec.namespace))
    await requireNamespaceExists(store.accounts, spec.namespace, `${fieldPrefix}namespace`);
  lookups.namespaces.add(spec.namespace);
  await requireSecrets(secrets, spec.namespace, spec.secrets ?? [], fieldPrefix);
  await refuseUnrunnable(lookups, spec, fieldPrefix);
  return {
    spec,
    dockerAuthConfig: dockerAuthConfig && secrets.sealJobCredentials(JSON.stringify(dockerAuthConfig)),
    submittedBy: me.name,
  };
}

export function jobRoutes(ctx: ServerContext): RouteDef<any, any>[] {
  const { store, events, secrets } = ctx;
  return [
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs`,
      auth: 'client',
      body: jobSpec,
      bodyName: 'job spec',
      bodyLimit: LARGE_BODY_LIMIT,
      summary: 'Submit a job (JSON, or YAML with Content-Type application/yaml); see docs/job-spec.md',
      response: '{ job }: the queued job',
      status: 201,
      async handler({ body, reply, auth }) {
        ctx.storage.refuseNewWork();
        const { spec, ...extra } = await prepareSubmission(ctx, principal(auth), body, '', lookupsFor(store));
        const job = await store.enqueue(spec, Date.now(), extra);
        events.queueChanged(job.queue);
        return reply.code(201).send({ job });
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
      response: '{ jobs }: the queued jobs, in the order given',
      status: 201,
      async handler({ body, reply, auth }) {
        ctx.storage.refuseNewWork();
        const me = principal(auth);
        const jobs: NewJob[] = [];
        const lookups = lookupsFor(store);
        // Every job is checked before any is stored: one bad job refuses the request, naming it (jobs[i].field).
        for (const [i, spec] of body.jobs.entries())
          jobs.push(await prepareSubmission(ctx, me, spec, `jobs[${i}].`, lookups));
        const queued = await store.enqueueMany(jobs, Date.now());
        for (const queue of new Set(queued.map((j) => j.queue))) events.queueChanged(queue);
        return reply.code(201).send({ jobs: queued });
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs`,
      auth: 'client',
      query: listQuery,
      summary: 'List the jobs of your namespaces (site admins: all), newest first',
      response: '{ jobs, nextBefore }: pass nextBefore as before for the next page',
      async handler({ query, auth }) {
        const jobs = await store.listJobs({
          queue: query.queue,
          state: query.state,
          namespace: query.namespace,
          namespaces: principal(auth).visibleNamespaces(),
          beforeId: query.before,
          limit: query.limit,
        });
        return { jobs, nextBefore: jobs.length === query.limit ? jobs[jobs.length - 1].id : null };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs/:id`,
      auth: 'client',
      summary: 'A job with its attempts',
      response:
        "{ job, attempts }: job.failureReason and each attempt's failureReason say why it did not complete (null when it did, or still runs; docs/api.md)",
      async handler({ params, auth }) {
        const job = await requireJob(store, params.id, principal(auth));
        return { job, attempts: await store.listAttempts(job.id) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/jobs/:id/logs`,
      auth: 'client',
      query: attemptQuery,
      summary: "An attempt's log entries with their whole output",
      response: '{ attempt, entries: [{ index, key, command, startTime, exitCode, durationMs, out }] }',
      async handler({ params, query, reply, auth }) {
        const job = await requireJob(store, params.id, principal(auth));
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
        const job = await requireJob(store, params.id, principal(auth));
        await streamJob(ctx, job.id, query.attempt, reply);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs/:id/cancel`,
      auth: 'client',
      summary: 'Cancel a job: queued jobs at once, running jobs as soon as their executor stops them',
      response: '{ job }',
      otherResponses: { 409: 'The job already finished' },
      async handler({ params, auth }) {
        const current = await requireJob(store, params.id, principal(auth));
        if (isTerminal(current.state))
          throw new HttpError(409, `job ${current.id} already ${current.state}; nothing to cancel`);
        const job = (await store.requestCancel(current.id, Date.now()))!;
        // It may have finished between the look above and the cancel: then there was nothing to cancel either.
        if (isTerminal(job.state) && job.state !== 'canceled')
          throw new HttpError(409, `job ${job.id} already ${job.state}; nothing to cancel`);
        events.jobInterrupted(job.id);
        return { job: job };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/jobs/:id/retry`,
      auth: 'client',
      summary: 'Queue a finished job again (its attempts history is kept)',
      response: '{ job }',
      otherResponses: { 409: 'The job has not finished' },
      async handler({ params, auth }) {
        const current = await requireJob(store, params.id, principal(auth));
        if (!isTerminal(current.state))
          throw new HttpError(409, `job ${current.id} is ${current.state}; only finished jobs can be retried`);
        ctx.storage.refuseNewWork();
        const job = (await store.retry(current.id, Date.now()))!;
        events.queueChanged(job.queue);
        events.jobChanged(job.id);
        return { job: job };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/executors`,
      auth: 'client',
      summary: 'Executors that have registered by heartbeat (site admins)',
      response:
        '{ executors: [{ name, hostname, queues, version, runtime, lastSeenAt, active, compatibility, ... }], serverVersion }',
      async handler({ auth }) {
        principal(auth).requireSiteAdmin('list executors');
        const since = Date.now() - EXECUTOR_ONLINE_WINDOW_MS;
        const executors = (await store.listExecutors()).map((e) => {
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
      response: '{ queues: [{ queue, queued, processing, oldestQueuedAt, completedLastHour, failedLastHour }] }',
      async handler() {
        return { queues: await store.queueStats(Date.now()) };
      },
    }),
  ];
}

/**
 * Streams a job as Server-Sent Events until it is finished and its whole log has been sent. Without an explicit
 * attempt the stream follows the job across attempts (a reset or retried job starts a new one).
 */
async function streamJob(
  ctx: ServerContext,
  jobId: number,
  fixedAttempt: number | undefined,
  reply: FastifyReply,
): Promise<void> {
  const { store, events } = ctx;
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  const closed = heldRequestSignal(reply, ctx.closing);
  const send = (event: string, data: unknown): void => {
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  // The hot event, written without an object to walk: only the text needs escaping.
  const sendOutput = (chunk: LogChunk): void => {
    res.write(
      `event: output\ndata: {"index":${chunk.index},"offset":${chunk.offset},"data":${JSON.stringify(chunk.data)}}\n\n`,
    );
  };
  /** Waits while the client is slower than the log: what is read from the store is never more than a page ahead. */
  const drained = async (): Promise<void> => {
    if (!res.writableNeedDrain || closed.aborted) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        res.off('drain', done);
        closed.removeEventListener('abort', done);
        resolve();
      };
      res.on('drain', done);
      closed.addEventListener('abort', done);
    });
  };

  let attempt = -1;
  let afterSeq = 0;
  let lastState = '';
  const sentLength = new Map<number, number>();
  const announced = new Map<number, string>();
  const announce = (entry: LogEntryRecord, withResult: boolean): void => {
    const view = {
      index: entry.index,
      key: entry.key,
      command: entry.command,
      startTime: entry.startTime,
      exitCode: withResult ? entry.exitCode : null,
      durationMs: withResult ? entry.durationMs : null,
    };
    const text = JSON.stringify(view);
    if (announced.get(entry.index) !== text) {
      announced.set(entry.index, text);
      send('entry', view);
    }
  };

  try {
    while (!closed.aborted) {
      const waiter = events.watchJobs([jobId]);
      const job = await store.getJob(jobId);
      if (!job) break;
      const wanted = fixedAttempt ?? job.attempt;
      if (wanted !== attempt) {
        attempt = wanted;
        afterSeq = 0;
        sentLength.clear();
        announced.clear();
        if (attempt > 0) send('attempt', { attempt });
      }
      if (attempt > 0) {
        // A page of chunks at a time (a client that connects late to a long log gets it in pieces, at its pace).
        for await (const read of chunkPages(store, jobId, attempt, afterSeq)) {
          if (closed.aborted) break;
          afterSeq = read.lastSeq;
          // Chunks are read before entries, so every chunk's entry is in the list.
          const entries = await store.listLogEntries(jobId, attempt);
          for (const chunks of read.byEntry.values()) {
            const last = chunks[chunks.length - 1];
            sentLength.set(last.index, last.offset + last.data.length);
          }
          // Entry by entry: its start, its output, then its result once all its output has been sent.
          for (const entry of entries) {
            if (!announced.has(entry.index)) announce(entry, false);
            for (const chunk of read.byEntry.get(entry.index) ?? []) sendOutput(chunk);
            if (entry.exitCode !== null && (sentLength.get(entry.index) ?? 0) >= entry.length) announce(entry, true);
          }
          await drained();
        }
        if (closed.aborted) break;
      }
      const stateView = JSON.stringify({
        state: job.state,
        failureMessage: job.failureMessage,
        failureReason: job.failureReason,
        attempt: job.attempt,
        cancel: job.cancelRequested,
      });
      if (stateView !== lastState) {
        lastState = stateView;
        send('state', {
          state: job.state,
          queue: job.queue,
          attempt: job.attempt,
          executorName: job.executorName,
          failureMessage: job.failureMessage,
          failureReason: job.failureReason,
          cancelRequested: job.cancelRequested,
        });
      }
      const done =
        fixedAttempt !== undefined ? job.attempt !== fixedAttempt || isTerminal(job.state) : isTerminal(job.state);
      if (done) {
        waiter.cancel();
        send('end', { state: job.state });
        break;
      }
      if (!(await waiter.wait(SSE_KEEPALIVE_MS, closed)) && !closed.aborted) res.write(': keepalive\n\n');
      // Woken by an append: let the executor's answer go out before this reads the new output back and writes it
      // (the executor sends its next request as soon as the answer comes, and prepares it while this works).
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    res.end();
  }
}
