// The admin web UI: the static files `npm run build` puts in dist/web (from web/), served at `/`.
// It is served from the not-found handler, so the route table (OpenAPI, fuzzing, route walks) stays the API's alone.
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyReply, FastifyRequest } from 'fastify';

/** dist/web, found the same way from dist/server/webUi.js and from src/server/webUi.ts (tests run either). */
export const WEB_UI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/web');

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
};

/** Paths the UI never answers: the APIs and the public operational routes keep their JSON 404. */
function isApiPath(urlPath: string): boolean {
  return (
    urlPath === '/api' ||
    urlPath.startsWith('/api/') ||
    urlPath === '/healthz' ||
    urlPath === '/metrics' ||
    urlPath.startsWith('/metrics/')
  );
}

export interface WebUi {
  /** Answers a GET or HEAD the API has no route for; false when it is not the UI's to answer. */
  serve(req: FastifyRequest, reply: FastifyReply): Promise<boolean>;
}

export function webUi(dir = WEB_UI_DIR): WebUi {
  const root = path.resolve(dir);
  const indexFile = path.join(root, 'index.html');
  return {
    async serve(req, reply) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return false;
      let urlPath: string;
      try {
        urlPath = decodeURIComponent(req.url.split('?')[0]);
      } catch {
        return false;
      }
      if (isApiPath(urlPath) || urlPath.includes('\0') || !existsSync(indexFile)) return false;
      const candidate = path.resolve(root, `.${path.posix.normalize(urlPath)}`);
      let file = indexFile;
      if (candidate.startsWith(root + path.sep)) {
        const info = await stat(candidate).catch(() => undefined);
        if (info?.isFile()) file = candidate;
        // A missing asset is a 404, not the page: a stale page asking for an old bundle should fail visibly.
        else if (urlPath.startsWith('/assets/')) return false;
      }
      const body = await readFile(file);
      const type = CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream';
      // Vite names assets by content hash, so they never change; the page itself (under 1 KiB) is never kept, so a
      // new release is picked up at once, like every other answer of the server.
      const immutable = file !== indexFile && path.relative(root, file).startsWith(`assets${path.sep}`);
      void reply
        .code(200)
        .header('content-type', type)
        .header('cache-control', immutable ? 'public, max-age=31536000, immutable' : 'no-store')
        .send(req.method === 'HEAD' ? undefined : body);
      return true;
    },
  };
}
