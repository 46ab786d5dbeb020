// The OpenAPI document, generated from the same route table and zod schemas that validate requests.
import { z } from 'zod';
import { errorResponse } from '../core/api.js';
import { VERSION } from '../core/version.js';
import type { RouteDef } from './http.js';

const SECURITY: Record<string, { [scheme: string]: [] }[]> = {
  public: [],
  executor: [{ executorToken: [] }],
  job: [{ jobToken: [] }],
  client: [{ apiToken: [] }],
};

function jsonSchema(schema: z.ZodType, io: 'input' | 'output' = 'input'): unknown {
  return z.toJSONSchema(schema, { io, unrepresentable: 'any' });
}

const ERROR_CONTENT = { 'application/json': { schema: jsonSchema(errorResponse, 'output') } };

/** A documented answer: a success with its route's schema, any other status with the error body. */
function answer(description: string, schema?: z.ZodType): unknown {
  return {
    description,
    ...(schema ? { content: { 'application/json': { schema: jsonSchema(schema, 'output') } } } : {}),
  };
}

export function openApiDocument(routes: RouteDef<any, any, any>[]): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const path = route.url.replace(/:(\w+)/g, '{$1}');
    const parameters: unknown[] = [...route.url.matchAll(/:(\w+)/g)].map((m) => ({
      name: m[1],
      in: 'path',
      required: true,
      schema: { type: 'integer' },
    }));
    if (route.query instanceof z.ZodObject) {
      const query = jsonSchema(route.query) as { properties?: Record<string, unknown>; required?: string[] };
      for (const [name, schema] of Object.entries(query.properties ?? {})) {
        parameters.push({ name, in: 'query', required: query.required?.includes(name) ?? false, schema });
      }
    }
    (paths[path] ??= {})[route.method.toLowerCase()] = {
      summary: route.summary,
      security: SECURITY[route.auth],
      parameters,
      ...(route.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(route.body) } } } }
        : {}),
      responses: Object.fromEntries(
        Object.entries({
          [String(route.status ?? 200)]: route.response ?? 'OK',
          ...route.otherResponses,
          ...(route.body || route.query ? { '400': 'Invalid input: each bad field named in issues' } : {}),
          ...(route.auth === 'public' ? {} : { '401': 'Missing or invalid credentials' }),
          ...(route.auth === 'job'
            ? {
                '403': 'The job token belongs to another job',
                '409': 'The attempt is no longer current (code stale_attempt): stop working on it',
              }
            : {}),
          ...(route.url.includes(':id') && route.auth === 'client' ? { '404': 'No such job' } : {}),
        }).map(([code, description]) => [
          code,
          Number(code) >= 400
            ? { description, content: ERROR_CONTENT }
            : answer(description, Number(code) === (route.status ?? 200) ? route.responseSchema : undefined),
        ]),
      ),
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Dockhand API',
      version: VERSION,
      description: 'Client API (/api/v1) and executor protocol (/api/executor/v1); see docs/protocol.md.',
    },
    components: {
      securitySchemes: {
        apiToken: { type: 'http', scheme: 'bearer', description: 'A user API token (DOCKHAND_TOKEN)' },
        jobToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'The job token returned by dequeue; valid for that attempt only',
        },
        executorToken: {
          type: 'apiKey',
          in: 'header',
          name: 'Authorization',
          description: "'token-executor <DOCKHAND_EXECUTORS_ACCESS_TOKEN>'",
        },
      },
    },
    paths,
  };
}
