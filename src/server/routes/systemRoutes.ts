// Health, metrics and the API description: public, so load balancers and Prometheus need no credentials.
import { responses } from '../../core/api.js';
import { VERSION } from '../../core/version.js';
import { defineRoute, type RouteDef } from '../http.js';
import type { ServerContext } from '../context.js';

export function systemRoutes(ctx: ServerContext, openApi: () => unknown): RouteDef<any, any>[] {
  return [
    defineRoute({
      method: 'GET',
      url: '/healthz',
      auth: 'public',
      summary: 'Health: 200 when the database answers and takes writes, 503 with the reason otherwise',
      response: '{ status: "ok", version, store }; with 503, { status: "unhealthy", reason, storage?, since? }',
      responseSchema: responses.health,
      async handler({ reply }) {
        const problem = ctx.storage.current;
        if (problem) {
          reply.code(503);
          return {
            status: 'unhealthy' as const,
            reason: problem.reason,
            storage: problem.kind,
            since: new Date(problem.since).toISOString(),
          };
        }
        try {
          await ctx.store.ping();
          return { status: 'ok' as const, version: VERSION, store: ctx.store.kind };
        } catch (err) {
          reply.code(503);
          return { status: 'unhealthy' as const, reason: `database: ${(err as Error).message}` };
        }
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/metrics',
      auth: 'public',
      summary: 'Prometheus metrics',
      async handler({ reply }) {
        const body = await ctx.metrics.registry.metrics();
        return reply.type(ctx.metrics.registry.contentType).send(body);
      },
    }),
    defineRoute({
      method: 'GET',
      url: '/api/openapi.json',
      auth: 'public',
      summary: 'This API, as OpenAPI 3.1',
      async handler() {
        return openApi();
      },
    }),
  ];
}
