// The CLI's HTTP client for the client API. Credentials come from DOCKHAND_URL / DOCKHAND_TOKEN, or from the
// file `dockhand up` writes for the local user.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_API_PREFIX } from '../core/protocol.js';
import type { FieldIssue } from '../core/jobSpec.js';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function credentialsFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(os.homedir(), '.config');
  return path.join(base, 'dockhand', 'credentials.json');
}

export function saveCredentials(url: string, token: string, env: NodeJS.ProcessEnv = process.env): string {
  const file = credentialsFile(env);
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${JSON.stringify({ url, token }, null, 2)}\n`, { mode: 0o600 });
  return file;
}

function loadCredentials(env: NodeJS.ProcessEnv): { url?: string; token?: string } {
  try {
    return JSON.parse(readFileSync(credentialsFile(env), 'utf8')) as { url?: string; token?: string };
  } catch {
    return {};
  }
}

export class ClientApi {
  readonly url: string;
  private readonly token: string;

  constructor(env: NodeJS.ProcessEnv = process.env) {
    const saved = env.DOCKHAND_URL && env.DOCKHAND_TOKEN ? {} : loadCredentials(env);
    this.url = (env.DOCKHAND_URL || saved.url || 'http://127.0.0.1:7070').replace(/\/$/, '');
    const token = env.DOCKHAND_TOKEN || saved.token;
    if (!token) {
      throw new CliError(
        'No API token: set DOCKHAND_TOKEN (printed by `dockhand server` on its first start), or run `dockhand up` on this machine.',
      );
    }
    this.token = token;
  }

  async request<T>(method: string, route: string, body?: unknown): Promise<T> {
    return (await this.send<T>(method, route, body)).data;
  }

  /** Like `request`, with the answer's status too (e.g. 201 created versus 200 updated). */
  async send<T>(method: string, route: string, body?: unknown): Promise<{ status: number; data: T }> {
    const res = await this.fetch(method, route, body);
    const text = await res.text();
    const data = text
      ? (JSON.parse(text) as T & { error?: string; issues?: FieldIssue[] })
      : ({} as T & { error?: string; issues?: FieldIssue[] });
    if (!res.ok) {
      const issues = data.issues?.map((i) => `\n  ${i.field}: ${i.message}`).join('') ?? '';
      const hint =
        res.status === 401 ? '\nCheck DOCKHAND_TOKEN (or run `dockhand up` again to refresh the saved token).' : '';
      throw new CliError(`${data.error ?? `HTTP ${res.status}`}${issues}${hint}`);
    }
    return { status: res.status, data };
  }

  async fetch(method: string, route: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    return this.fetchRaw(
      method,
      route,
      body === undefined ? undefined : JSON.stringify(body),
      'application/json',
      signal,
    );
  }

  /** A request with a body of another type (a build context's bytes). */
  async fetchRaw(
    method: string,
    route: string,
    body: string | Uint8Array | undefined,
    contentType: string,
    signal?: AbortSignal,
  ): Promise<Response> {
    try {
      return await fetch(`${this.url}${CLIENT_API_PREFIX}${route}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'content-type': contentType }),
        },
        body: body as BodyInit | undefined,
        signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(cause)) {
        throw new CliError(
          `cannot trust the certificate of ${this.url} (${cause}): if it comes from your own CA or is self-signed, run with NODE_EXTRA_CA_CERTS=/path/to/ca.pem`,
        );
      }
      throw new CliError(
        `cannot reach Dockhand at ${this.url} (${cause}): is the server running? Set DOCKHAND_URL to its address.`,
      );
    }
  }
}
