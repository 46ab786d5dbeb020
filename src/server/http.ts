// Route definitions with their zod schemas and auth kind next to the handler. The same table drives request
// validation, authentication, the OpenAPI document and the test that walks every route.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { issuesOf, type FieldIssue } from '../core/jobSpec.js';
import { hashToken, tokensEqual } from '../core/tokens.js';
import type { UserRecord } from '../store/accounts.js';
import type { AttemptRecord } from '../store/store.js';
import type { BuildRecord, BuildTryRecord } from '../store/builds.js';
import type { StoreReads } from './jobs/jobLedger.js';
import { Principal } from './access.js';
import { HttpError, badRequest } from './httpError.js';

export type AuthKind = 'public' | 'executor' | 'job' | 'client' | 'buildWorker';

/** The executor protocol's routes, by their auth: the hot path. */
const EXECUTOR_PROTOCOL: ReadonlySet<AuthKind> = new Set(['executor', 'job']);

export type AuthContext =
  | { kind: 'public' }
  | { kind: 'executor' }
  | { kind: 'client'; tokenId: number; principal: Principal }
  | { kind: 'job'; attempt: AttemptRecord }
  /** A build worker's job token: its try and build, ended or not (the build manager fences). */
  | { kind: 'buildWorker'; build: BuildRecord; try: BuildTryRecord };

export { HttpError, badRequest } from './httpError.js';

export interface HandlerContext<B, Q> {
  req: FastifyRequest;
  reply: FastifyReply;
  body: B;
  query: Q;
  params: Record<string, string>;
  auth: AuthContext;
}

export interface RouteDef<B = unknown, Q = unknown, R = unknown> {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  auth: AuthKind;
  summary: string;
  body?: z.ZodType<B>;
  /** What the body is, for error messages ("invalid job spec"); default "request body". */
  bodyName?: string;
  query?: z.ZodType<Q>;
  /** Describes the success response for the OpenAPI document. */
  response?: string;
  /**
   * The success answer's schema (core/api.ts, core/protocol.ts): the handler's answer is typed by it and the
   * OpenAPI document shows it. A client route's answer is serialized through it at run time, so only the fields it
   * names leave the server (its handlers hand out store records). The executor protocol's answers are built field
   * by field in the dispatch service and are not parsed again: that cost the hot path ~10% of its jobs/s
   * (BENCHMARKS.md); test/e2e/api.test.ts checks them against their schemas instead. A handler that sends by itself
   * (a stream, an empty 204) returns the reply.
   */
  responseSchema?: z.ZodType<R>;
  /** Success status for the OpenAPI document (default 200). */
  status?: number;
  /** Other documented answers, e.g. { 204: 'no job arrived in time' }. */
  otherResponses?: Record<number, string>;
  /** Largest request body accepted, in bytes (default DEFAULT_BODY_LIMIT); larger ones get 413. */
  bodyLimit?: number;
  handler(ctx: HandlerContext<B, Q>): Promise<NoInfer<R> | FastifyReply>;
}

export function defineRoute<B = undefined, Q = undefined, R = unknown>(def: RouteDef<B, Q, R>): RouteDef<B, Q, R> {
  return def;
}

function parseWith<T>(schema: z.ZodType<T> | undefined, value: unknown, what: string): T {
  if (!schema) return undefined as T;
  const result = schema.safeParse(value);
  if (!result.success) throw badRequest(`invalid ${what}`, issuesOf(result.error));
  return result.data;
}

const AUTH_HINT: Record<Exclude<AuthKind, 'public'>, string> = {
  executor: "send 'Authorization: token-executor <DOCKHAND_EXECUTORS_ACCESS_TOKEN>'",
  job: "send 'Authorization: Bearer <job token>' as received from dequeue",
  client: "send 'Authorization: Bearer <API token>' (DOCKHAND_TOKEN)",
  buildWorker: "send 'Authorization: Bearer <build job token>' as received from register",
};

export interface AuthDeps {
  store: StoreReads;
  executorsAccessToken: string;
}

export async function authenticate(req: FastifyRequest, kind: AuthKind, deps: AuthDeps): Promise<AuthContext> {
  if (kind === 'public') return { kind };
  const header = req.headers.authorization ?? '';
  const space = header.indexOf(' ');
  const scheme = space > 0 ? header.slice(0, space).toLowerCase() : '';
  const credential = space > 0 ? header.slice(space + 1).trim() : '';
  const refuse = (why: string): HttpError => new HttpError(401, `${why}: ${AUTH_HINT[kind]}`);
  if (!credential) throw refuse('missing credentials');
  if (kind === 'executor') {
    if (scheme !== 'token-executor' || !tokensEqual(credential, deps.executorsAccessToken))
      throw refuse('invalid executor token');
    return { kind };
  }
  if (scheme !== 'bearer') throw refuse('wrong authorization scheme');
  if (kind === 'buildWorker') {
    const found = await deps.store.builds.findTryByToken(hashToken(credential));
    if (!found) throw refuse('invalid build job token');
    return { kind, build: found.build, try: found.try };
  }
  if (kind === 'client') {
    const found = await deps.store.accounts.findToken(hashToken(credential), Date.now());
    if (!found) throw refuse('invalid API token');
    return { kind, tokenId: found.token.id, principal: await principalOf(deps.store, found.user) };
  }
  return { kind, attempt: await attemptOfJobToken(deps.store, credential, (req.params as Record<string, string>).id) };
}

/** The attempt a job token belongs to, which must be one of job `jobId` (as given in the route). */
async function attemptOfJobToken(store: StoreReads, token: string, jobId: string): Promise<AttemptRecord> {
  return jobTokenAttempt(await store.jobs.findAttemptByToken(hashToken(token)), jobId);
}

/** The attempt found for a job token (none: the token is unknown), which must be one of job `jobId`. */
export function jobTokenAttempt(attempt: AttemptRecord | undefined, jobId: string | number): AttemptRecord {
  if (!attempt) throw new HttpError(401, `invalid job token: ${AUTH_HINT.job}`);
  if (String(attempt.jobId) !== String(jobId))
    throw new HttpError(403, `this job token belongs to job ${attempt.jobId}, not job ${jobId}`);
  return attempt;
}

async function principalOf(store: StoreReads, user: UserRecord): Promise<Principal> {
  return new Principal(user, await store.accounts.orgsOf(user.id));
}

/** The user behind a client route's request. */
export function principal(auth: AuthContext): Principal {
  if (auth.kind !== 'client') throw new Error('client route without client auth');
  return auth.principal;
}

/** Request bodies of client and executor calls; routes that carry more (a job spec, log output) say so. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;
/** Job submissions (up to 8 MiB of files, JSON-escaped) and log appends (2M characters, escaped). */
export const LARGE_BODY_LIMIT = 16 * 1024 * 1024;

export function registerRoutes(app: FastifyInstance, routes: RouteDef<any, any, any>[], deps: AuthDeps): void {
  // Filled before the body is read, so requests without valid credentials never cost a body parse.
  const authOf = new WeakMap<FastifyRequest, AuthContext>();
  for (const def of routes) {
    app.route({
      method: def.method,
      url: def.url,
      config: { auth: def.auth },
      bodyLimit: def.bodyLimit ?? DEFAULT_BODY_LIMIT,
      // Per-request lines would drown the log (executors poll and append constantly); errors are still logged.
      logLevel: 'warn',
      onRequest: async (req) => {
        authOf.set(req, await authenticate(req, def.auth, deps));
      },
      handler: async (req, reply) => {
        const auth = authOf.get(req) ?? (await authenticate(req, def.auth, deps));
        const body = parseWith(def.body, req.body, def.bodyName ?? 'request body');
        const query = parseWith(def.query, req.query ?? {}, 'request query');
        const result = await def.handler({
          req,
          reply,
          body,
          query,
          params: req.params as Record<string, string>,
          auth,
        });
        if (result === reply || reply.sent) return reply;
        return def.responseSchema && !EXECUTOR_PROTOCOL.has(def.auth) ? def.responseSchema.parse(result) : result;
      },
    });
  }
}

/** Aborts when the client goes away or the server shuts down, so a held request stops waiting for nobody. */
export function heldRequestSignal(reply: { raw: NodeJS.EventEmitter }, closing: AbortSignal): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return AbortSignal.any([controller.signal, closing]);
}

/**
 * Takes the reply over as a text/event-stream (unbuffered by proxies), and the signal that ends it: the client went
 * away or the server is stopping.
 */
export function eventStream(
  reply: FastifyReply,
  closing: AbortSignal,
): { res: FastifyReply['raw']; closed: AbortSignal } {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  return { res, closed: heldRequestSignal(reply, closing) };
}

export const idParam = z.coerce.number().int().positive();

export function parseId(raw: string | undefined): number {
  const result = idParam.safeParse(raw);
  if (!result.success) throw new HttpError(404, `no job ${raw}: job ids are positive integers`);
  return result.data;
}
