// The fastify app for a coordinator's routes (coordinator.ts composes them): security headers, the auth-failure
// limiter, YAML bodies, the web UI, and one error format for every failure.
import helmet from '@fastify/helmet';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
} from 'fastify';
import { formatSize } from '../core/units.js';
import { AuthFailureLimiter } from './authLimiter.js';
import {
  DEFAULT_BODY_LIMIT,
  HttpError,
  LARGE_BODY_LIMIT,
  registerRoutes,
  type AuthDeps,
  type RouteDef,
} from './http.js';
import type { StorageHealth } from './storageHealth.js';
import { parseYamlBody } from './yamlBody.js';
import { webUi } from './webUi.js';

export interface AppOptions {
  /** Serve HTTPS with this certificate and key (and send HSTS). */
  https?: { cert: Buffer; key: Buffer };
  /** Which proxies' X-Forwarded-For to believe for the client address; default none. */
  trustProxy?: boolean | number | string[];
  /** 401 answers one address may get per window before its authenticated requests get 429; off when absent or limit 0. */
  authFailures?: { limit: number; windowMs: number };
}

/** The API and its same-origin web UI (web/): its own scripts, styles and API only; never framed. */
function cspDirectives(tlsOn: boolean): Record<string, string[]> {
  return {
    defaultSrc: ["'self'"],
    baseUri: ["'self'"],
    connectSrc: ["'self'"],
    fontSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    imgSrc: ["'self'", 'data:'],
    objectSrc: ["'none'"],
    scriptSrc: ["'self'"],
    scriptSrcAttr: ["'none'"],
    styleSrc: ["'self'"],
    ...(tlsOn ? { upgradeInsecureRequests: [] } : {}),
  };
}

const HSTS_MAX_AGE_S = 180 * 24 * 3600;

function securityHeaders(tlsOn: boolean) {
  return {
    contentSecurityPolicy: { useDefaults: false, directives: cspDirectives(tlsOn) },
    frameguard: { action: 'deny' as const },
    referrerPolicy: { policy: 'no-referrer' as const },
    // HSTS only means something over HTTPS; a plain-HTTP server must not pin browsers to HTTPS it does not serve.
    strictTransportSecurity: tlsOn ? { maxAge: HSTS_MAX_AGE_S, includeSubDomains: false } : (false as const),
  };
}

/**
 * The main security headers, for the few answers fastify gives before any hook runs (a URL that is not valid
 * percent-encoding, a path parameter over the length limit); helmet sets these and more on every other answer.
 */
function baselineHeaders(tlsOn: boolean): Record<string, string> {
  const csp = Object.entries(cspDirectives(tlsOn))
    .map(([name, values]) => [name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), ...values].join(' '))
    .join(';');
  return {
    'content-security-policy': csp,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
    ...(tlsOn ? { 'strict-transport-security': `max-age=${HSTS_MAX_AGE_S}` } : {}),
  };
}

/** 413 that says which limit and what to do, instead of fastify's bare "Request body is too large". */
function bodyTooLarge(req: FastifyRequest): HttpError {
  const limit = req.routeOptions.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const advice = req.routeOptions.url?.endsWith('/builds/contexts')
    ? "the server's builds.MAXIMUM_CONTEXT_SIZE: leave out what the build does not need, or build from a git commit"
    : limit >= LARGE_BODY_LIMIT
      ? 'send less in one request: keep job files under 8 MiB (fetch larger inputs from a repository or URL in a step) and log output in smaller appends'
      : 'send a smaller body; this route needs only a small JSON object';
  return new HttpError(
    413,
    `request body too large: ${req.method} ${req.routeOptions.url ?? req.url.split('?')[0]} accepts at most ${formatSize(limit)}B (${limit} bytes); ${advice}`,
    {
      limitBytes: limit,
    },
  );
}

/** Trust this many proxies in front: the client is the address the outermost of them saw. */
function hops(count: number): (address: string, index: number) => boolean {
  return (_address, index) => index < count;
}

const STORAGE_RETRY_AFTER_S = '5';

function send(reply: FastifyReply, err: HttpError): FastifyReply {
  // A 503 is a "not now": say when to try again.
  if (err.statusCode === 503) reply.header('retry-after', STORAGE_RETRY_AFTER_S);
  return reply.code(err.statusCode).send({ error: err.message, ...err.extra });
}

export function buildApp(
  routes: RouteDef<any, any>[],
  deps: AuthDeps & { storage: StorageHealth },
  logger: FastifyBaseLogger,
  options: AppOptions = {},
): FastifyInstance {
  const common: FastifyServerOptions = {
    loggerInstance: logger,
    bodyLimit: DEFAULT_BODY_LIMIT,
    // Long polls and log streams stay open; keep idle keep-alive sockets longer than an executor's poll.
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Only when configured (DOCKHAND_TRUST_PROXY): otherwise anyone could pick their address for the auth limiter.
    trustProxy: typeof options.trustProxy === 'number' ? hops(options.trustProxy) : (options.trustProxy ?? false),
    // Answers fastify gives before routing (bad percent-encoding, a too-long path parameter): our format and headers.
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      const status = err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : 400;
      const message =
        status === 414
          ? 'a path segment of this URL is too long'
          : 'this URL is not valid: a path segment is not proper percent-encoding';
      void reply
        .code(status)
        .headers(baselineHeaders(Boolean(options.https)))
        .send({ error: message, code: err.code });
    },
  };
  // The HTTPS server's type differs only in the raw server; routes and hooks are the same.
  const app = Fastify(
    options.https ? ({ ...common, https: options.https } as FastifyServerOptions) : common,
  ) as unknown as FastifyInstance;
  // Registered first, so its headers are on every answer, including the limiter's 429 and errors.
  void app.register(helmet, securityHeaders(Boolean(options.https)));
  app.addHook('onSend', async (_req, reply, payload) => {
    // API answers are per caller and often secret (job specs, tokens): no cache may keep them.
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    return payload;
  });

  const limiter =
    options.authFailures && options.authFailures.limit > 0 ? new AuthFailureLimiter(options.authFailures) : undefined;
  if (limiter) {
    app.addHook('onRequest', async (req, reply) => {
      const auth = (req.routeOptions.config as { auth?: string }).auth;
      if (auth === undefined || auth === 'public') return;
      const waitMs = limiter.blockedFor(req.ip);
      if (waitMs === undefined) return;
      // Refused before the credentials are looked at: a blocked guesser learns nothing about them.
      const seconds = Math.max(1, Math.ceil(waitMs / 1000));
      reply.header('retry-after', String(seconds));
      throw new HttpError(
        429,
        `too many failed authentications from ${req.ip}: requests that need credentials are refused until ${new Date(Date.now() + waitMs).toISOString()}; retry after ${seconds} s with valid credentials`,
        { retryAfterSeconds: seconds },
      );
    });
    app.addHook('onResponse', async (req, reply) => {
      if (reply.statusCode === 401 && limiter.recordFailure(req.ip)) {
        req.log.warn(
          { ip: req.ip, limit: limiter.options.limit, windowMs: limiter.options.windowMs },
          'too many failed authentications: refusing this address until its window ends',
        );
      }
    });
  }

  app.addContentTypeParser(
    ['application/yaml', 'application/x-yaml', 'text/yaml'],
    { parseAs: 'string' },
    (_req, body, done) => {
      try {
        done(null, parseYamlBody(body as string));
      } catch (err) {
        done(err as Error, undefined);
      }
    },
  );

  // Uploaded build contexts (tar.gz) arrive as bytes; routes that take them check the size and the format.
  app.addContentTypeParser(['application/gzip', 'application/x-gzip'], { parseAs: 'buffer' }, (_req, body, done) =>
    done(null, body),
  );

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof HttpError) return send(reply, err);
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return send(reply, bodyTooLarge(req));
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      const type = String(req.headers['content-type'] ?? '').slice(0, 100);
      return send(
        reply,
        new HttpError(
          415,
          `unsupported Content-Type ${JSON.stringify(type)}: send application/json (a job spec may also be application/yaml; a build context application/gzip)`,
          { code: err.code },
        ),
      );
    }
    const status = err.statusCode ?? 500;
    if (status < 500)
      return reply.code(status).send({ error: err.message || `request refused (HTTP ${status})`, code: err.code });
    // The database refused a write (disk full, read-only) or is out of reach: a 503 that says so, not a 500. Each
    // write is one transaction, so nothing of the request was kept; the caller can send it again.
    const fault = deps.storage.noteError(err);
    if (fault) {
      return reply
        .code(503)
        .header('retry-after', STORAGE_RETRY_AFTER_S)
        .send({
          error: `the database cannot take this request now (${fault.kind}); nothing was changed, try again later. GET /healthz says when it recovers.`,
          code: 'STORAGE_UNAVAILABLE',
          storage: fault.kind,
        });
    }
    req.log.error({ err, url: req.url, method: req.method }, 'request failed');
    return reply.code(500).send({ error: 'internal server error; the server log has details' });
  });
  const ui = webUi();
  app.setNotFoundHandler(async (req, reply) => {
    // Not an API route: the web UI's files, and its page for every other path (deep links).
    if (await ui.serve(req, reply)) return reply;
    return reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` });
  });

  registerRoutes(app, routes, deps);
  return app;
}
