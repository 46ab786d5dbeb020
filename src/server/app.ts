// The fastify app: the composition of the route groups, with one error format for every failure.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import YAML from 'yaml';
import type { ServerContext } from './context.js';
import { HttpError, registerRoutes, type RouteDef } from './http.js';
import { openApiDocument } from './openapi.js';
import { executorRoutes } from './routes/executorRoutes.js';
import { jobRoutes } from './routes/jobRoutes.js';
import { systemRoutes } from './routes/systemRoutes.js';

export const BODY_LIMIT_BYTES = 16 * 1024 * 1024;

export interface BuiltApp {
  app: FastifyInstance;
  routes: RouteDef<any, any>[];
}

export function buildApp(ctx: Omit<ServerContext, 'log' | 'closing'>, logger: FastifyBaseLogger): BuiltApp {
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: BODY_LIMIT_BYTES,
    // Long polls and log streams stay open; keep idle keep-alive sockets longer than an executor's poll.
    keepAliveTimeout: 65_000,
    return503OnClosing: true,
  });
  const closing = new AbortController();
  const full: ServerContext = { ...ctx, log: logger, closing: closing.signal };
  app.addHook('preClose', async () => closing.abort());

  app.addContentTypeParser(['application/yaml', 'application/x-yaml', 'text/yaml'], { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, YAML.parse(body as string));
    } catch (err) {
      done(new HttpError(400, `body is not valid YAML: ${(err as Error).message}`), undefined);
    }
  });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (err instanceof HttpError) return reply.code(err.statusCode).send({ error: err.message, ...err.extra });
    const status = err.statusCode ?? 500;
    if (status < 500) return reply.code(status).send({ error: err.message, code: err.code });
    req.log.error({ err, url: req.url, method: req.method }, 'request failed');
    return reply.code(500).send({ error: 'internal server error; the server log has details' });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` }));

  const routes: RouteDef<any, any>[] = [];
  routes.push(...executorRoutes(full), ...jobRoutes(full), ...systemRoutes(full, () => openApiDocument(routes)));
  registerRoutes(app, routes, { store: ctx.store, executorsAccessToken: ctx.config.executorsAccessToken });
  return { app, routes };
}
