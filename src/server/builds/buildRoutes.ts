// The build manager's routes: the client API (/api/v1/builds…: submit, upload a context, list, show, follow the log,
// cancel; the image-pushed events) and the worker protocol (/api/build-worker/v1: register, heartbeat, phase, log,
// context, complete). Workers authenticate with their job token (Bearer), fenced to their try.
import { z } from 'zod';
import {
  BUILD_WORKER_API_PREFIX,
  buildPack,
  buildRequest,
  buildResponses,
  cancellable,
  completeRequest,
  heartbeatResponse,
  phaseRequest,
  registerRequest,
  workerLogRequest,
  type BuildLogEntry,
  type BuildView,
} from '../../core/builds.js';
import { namespaceName } from '../../core/jobSpec.js';
import { CLIENT_API_PREFIX } from '../../core/protocol.js';
import { parseSize } from '../../core/units.js';
import type { BuildLogRecord, BuildRecord, BuildTryRecord } from '../../store/builds.js';
import type { ServerContext } from '../context.js';
import {
  HttpError,
  LARGE_BODY_LIMIT,
  defineRoute,
  eventStream,
  principal,
  type AuthContext,
  type RouteDef,
} from '../http.js';
import type { BuildManager, WorkerCall } from './buildManager.js';

const SSE_KEEPALIVE_MS = 15_000;
const emptyAnswer = z.strictObject({});
const LOG_PAGE = 1000;
const LOG_PAGE_MAX = 10_000;

const buildId = (raw: string | undefined): number => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new HttpError(404, `no build ${raw}: build ids are positive integers`);
  return n;
};

async function viewsOf(ctx: ServerContext, builds: BuildRecord[]): Promise<BuildView[]> {
  const history = await ctx.store.builds.phaseHistory(builds.map((b) => b.id));
  return builds.map((b) => viewOf(b, history.get(b.id) ?? []));
}

async function oneView(ctx: ServerContext, b: BuildRecord): Promise<BuildView> {
  return (await viewsOf(ctx, [b]))[0];
}

function viewOf(b: BuildRecord, phases: BuildView['phases']): BuildView {
  return {
    id: b.id,
    namespace: b.namespace,
    repository: b.repository,
    phase: b.phase,
    final: b.final,
    spec: b.spec,
    commit: b.commit,
    triesRemaining: b.triesRemaining,
    tries: b.tries,
    plane: b.plane,
    digest: b.digest,
    message: b.message,
    submittedBy: b.submittedBy,
    cancelRequested: b.cancelRequested,
    cancellable: cancellable(b),
    createdAt: b.createdAt,
    startedAt: b.startedAt,
    finishedAt: b.finishedAt,
    phases,
  };
}

const tryView = (t: BuildTryRecord) => ({
  number: t.number,
  plane: t.plane,
  executionId: t.executionId,
  startedAt: t.startedAt,
  registeredAt: t.registeredAt,
  lastHeartbeatAt: t.lastHeartbeatAt,
  endedAt: t.endedAt,
  outcome: t.outcome,
  message: t.message,
});

const entryView = (e: BuildLogRecord): BuildLogEntry => ({
  seq: e.seq,
  at: e.at,
  try: e.try,
  kind: e.kind,
  text: e.text,
  ...(e.phase ? { phase: e.phase } : {}),
});

export function buildRoutes(ctx: ServerContext, manager: BuildManager): RouteDef<any, any>[] {
  const store = ctx.store.builds;
  const worker = (auth: AuthContext): WorkerCall => {
    if (auth.kind !== 'buildWorker') throw new Error('build worker route without build worker auth');
    return manager.current(auth);
  };
  return [
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/builds/contexts`,
      auth: 'client',
      query: z.strictObject({ namespace: namespaceName.optional() }),
      summary: 'Upload a build context: a tar.gz body (Content-Type: application/gzip), for one build to name',
      response: 'the context id to give as context.upload',
      responseSchema: buildResponses.context,
      status: 201,
      // Refused while it arrives (413), not after it was held in memory.
      bodyLimit: parseSize(manager.config.MAXIMUM_CONTEXT_SIZE)!,
      async handler({ req, reply, auth, query }) {
        const me = principal(auth);
        if (!Buffer.isBuffer(req.body))
          throw new HttpError(415, 'send the context as the body, with Content-Type: application/gzip');
        const ctxInfo = await manager.uploadContext(me, query.namespace ?? `user:${me.name}`, req.body);
        reply.code(201);
        return ctxInfo;
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/builds`,
      auth: 'client',
      body: buildRequest,
      bodyName: 'build',
      summary: 'Submit an image build (a git commit or an uploaded context, a Dockerfile, the tags to push)',
      response: 'the build, waiting',
      responseSchema: buildResponses.build,
      status: 201,
      otherResponses: { 409: 'This server runs no build workers', 429: "The namespace's queue of builds is full" },
      async handler({ auth, body, reply }) {
        const build = await manager.submit(principal(auth), body);
        reply.code(201);
        return { build: await oneView(ctx, build) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/builds`,
      auth: 'client',
      query: z.strictObject({
        namespace: namespaceName.optional(),
        active: z.enum(['true', 'false']).optional().describe('true: only builds not yet final'),
        before: z.coerce.number().int().positive().optional().describe('Page: only builds with a smaller id'),
        limit: z.coerce.number().int().min(1).max(500).default(50),
      }),
      summary: 'Builds you may see, newest first',
      response: 'the builds',
      responseSchema: buildResponses.builds,
      async handler({ auth, query }) {
        const me = principal(auth);
        if (query.namespace) me.requireNamespace(query.namespace, 'namespace');
        const builds = await store.list({
          namespaces: query.namespace ? [query.namespace] : me.visibleNamespaces(),
          active: query.active === 'true' ? true : undefined,
          beforeId: query.before,
          limit: query.limit,
        });
        return {
          builds: await viewsOf(ctx, builds),
          nextBefore: builds.length === query.limit ? builds[builds.length - 1].id : null,
        };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/builds/:id`,
      auth: 'client',
      summary: 'A build, its phases and its tries (each worker: plane, registration, heartbeat, outcome)',
      response: 'the build and its tries',
      responseSchema: buildResponses.buildDetail,
      async handler({ auth, params }) {
        const build = await manager.visible(principal(auth), buildId(params.id));
        return { build: await oneView(ctx, build), tries: (await store.listTries(build.id)).map(tryView) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/builds/:id/cancel`,
      auth: 'client',
      summary: 'Cancel a build (refused once it is pushing); its worker is stopped',
      response: 'the build, cancelled',
      responseSchema: buildResponses.build,
      otherResponses: { 409: 'The build is pushing or has ended' },
      async handler({ auth, params }) {
        const build = await manager.cancel(principal(auth), buildId(params.id));
        return { build: await oneView(ctx, build) };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/builds/:id/logs`,
      auth: 'client',
      query: z.strictObject({
        after: z.coerce.number().int().min(0).default(0).describe('Only entries after this seq'),
        follow: z
          .enum(['true', 'false'])
          .optional()
          .describe('true: a text/event-stream of entries until the build is final'),
        limit: z.coerce.number().int().min(1).max(LOG_PAGE_MAX).default(LOG_PAGE_MAX).describe('Entries per page'),
      }),
      summary:
        "A build's log: phases (timestamped), the manager's notes and the worker's output; ?follow=true streams it",
      response: 'the entries (or, with follow, an event stream: entry, build, end)',
      responseSchema: buildResponses.logs,
      async handler({ auth, params, query, reply }) {
        const build = await manager.visible(principal(auth), buildId(params.id));
        if (query.follow !== 'true') {
          const entries = await store.readLog(build.id, query.after, query.limit);
          const next = entries.length === query.limit ? entries[entries.length - 1].seq : null;
          return { entries: entries.map(entryView), final: build.final && next === null, next };
        }
        const { res, closed } = eventStream(reply, ctx.closing);
        const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
        let after = query.after;
        let lastPhase = '';
        try {
          while (!closed.aborted) {
            const waiter = ctx.wakeups.watchBuild(build.id);
            for (;;) {
              const page = await store.readLog(build.id, after, LOG_PAGE);
              for (const e of page) send('entry', entryView(e));
              if (page.length) after = page[page.length - 1].seq;
              if (page.length < LOG_PAGE || closed.aborted) break;
            }
            const now = await store.get(build.id);
            if (!now) break;
            const data = {
              phase: now.phase,
              final: now.final,
              digest: now.digest,
              message: now.message,
              tries: now.tries,
              triesRemaining: now.triesRemaining,
              plane: now.plane,
            };
            const state = JSON.stringify(data);
            if (state !== lastPhase) {
              lastPhase = state;
              send('build', data);
            }
            if (now.final) {
              waiter.cancel();
              send('end', { phase: now.phase, digest: now.digest });
              break;
            }
            if (!(await waiter.wait(SSE_KEEPALIVE_MS, closed)) && !closed.aborted) res.write(': keepalive\n\n');
          }
        } finally {
          res.end();
        }
        return reply;
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/events/image-pushed`,
      auth: 'client',
      query: z.strictObject({
        after: z.coerce.number().int().min(0).default(0).describe('Only events with a larger id'),
        image: z.string().max(255).optional().describe('Only this image (REGISTRY/PATH)'),
        limit: z.coerce.number().int().min(1).max(1000).default(100),
      }),
      summary: 'Image-pushed events of complete builds, oldest first (what the rollout watcher consumes)',
      response: 'the events',
      responseSchema: buildResponses.imageEvents,
      async handler({ auth, query }) {
        principal(auth).requireSiteAdmin('read image-pushed events');
        return {
          events: await store.listImagePushes({ afterId: query.after, image: query.image, limit: query.limit }),
        };
      },
    }),

    // --- the worker protocol ----------------------------------------------------------------------------------------
    defineRoute({
      method: 'POST',
      url: `${BUILD_WORKER_API_PREFIX}/register`,
      auth: 'public',
      body: registerRequest,
      summary: 'A build worker exchanges its registration token (once) for its build pack and job token',
      response: 'the build pack',
      responseSchema: buildPack,
      otherResponses: { 401: 'The token is invalid, expired, or was used already' },
      async handler({ body }) {
        return manager.register(body.registrationToken);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${BUILD_WORKER_API_PREFIX}/heartbeat`,
      auth: 'buildWorker',
      summary: 'A build worker is alive; answers whether it must stop (cancelled, or its try ended)',
      response: 'whether to stop',
      responseSchema: heartbeatResponse,
      async handler({ auth }) {
        try {
          return await manager.heartbeat(worker(auth));
        } catch (err) {
          // An ended try is told to stop, not refused: the worker's loop reads one answer.
          if (err instanceof HttpError && err.statusCode === 409) return { stop: true };
          throw err;
        }
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${BUILD_WORKER_API_PREFIX}/phase`,
      auth: 'buildWorker',
      body: phaseRequest,
      summary: 'A build worker enters a phase (unpacking, pulling, building, pushing)',
      response: 'an empty object',
      responseSchema: emptyAnswer,
      async handler({ auth, body }) {
        await manager.setPhase(worker(auth), body.phase, body.detail);
        return {};
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${BUILD_WORKER_API_PREFIX}/log`,
      auth: 'buildWorker',
      body: workerLogRequest,
      bodyLimit: LARGE_BODY_LIMIT,
      summary: "Lines of a build worker's output (secrets are masked again on the server)",
      response: 'an empty object',
      responseSchema: emptyAnswer,
      async handler({ auth, body }) {
        await manager.appendLog(worker(auth), body.lines);
        return {};
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${BUILD_WORKER_API_PREFIX}/context`,
      auth: 'buildWorker',
      summary: "The build's uploaded context (tar.gz)",
      response: 'application/gzip',
      async handler({ auth, reply }) {
        const data = await manager.context(worker(auth));
        return reply.type('application/gzip').send(data);
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${BUILD_WORKER_API_PREFIX}/complete`,
      auth: 'buildWorker',
      body: completeRequest,
      summary:
        'A build worker ends its try: complete (with the manifest digest), error (final) or incomplete (retried)',
      response: 'an empty object',
      responseSchema: emptyAnswer,
      async handler({ auth, body }) {
        await manager.complete(worker(auth), body);
        return {};
      },
    }),
  ];
}
