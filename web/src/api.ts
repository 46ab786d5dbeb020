// The client API (/api/v1) with the signed-in token, and the types of what it answers (docs/api.md). Record types
// come from the server's own sources (types only: nothing of the server's code is bundled, apart from the failure
// reasons' table, core/failureReasons.ts, and the size formatter, core/units.ts, both with no imports).
import type { JobState } from '../../src/core/jobState';
import type { ExecutorCompatibility } from '../../src/core/compatibility';
import type { AttemptRecord, ExecutorRecord, JobRecord } from '../../src/store/store';

export type { JobState };

const TOKEN_KEY = 'dockhand.token';

export function savedToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token: string | null): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Called when the server refuses the token (401), so the app can go back to the sign-in form. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

export function authHeaders(token = savedToken()): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

export async function api<T>(
  route: string,
  init: { method?: string; body?: unknown; token?: string; signal?: AbortSignal } = {},
): Promise<T> {
  const res = await fetch(`/api/v1${route}`, {
    method: init.method ?? 'GET',
    headers: {
      ...authHeaders(init.token ?? savedToken()),
      ...(init.body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    signal: init.signal,
  });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const message = (body as { error?: string } | undefined)?.error ?? `HTTP ${res.status}`;
    if (res.status === 401 && !init.token) onUnauthorized();
    throw new ApiError(res.status, message);
  }
  return body as T;
}

export const JOB_STATES: JobState[] = ['queued', 'processing', 'completed', 'failed', 'canceled'];

/** A job as the API answers it (the server's own record type; only types cross over, no code). */
export type Job = Omit<JobRecord, 'spec'> & {
  spec: Record<string, unknown> & { steps?: { key?: string; run?: string }[] };
};

export type Attempt = AttemptRecord;

export type Compatibility = ExecutorCompatibility | null;

export interface Executor extends ExecutorRecord {
  active: boolean;
  /** Absent on servers from before it was added. */
  compatibility?: Compatibility;
}

export interface QueueStats {
  queue: string;
  queued: number;
  processing: number;
  oldestQueuedAt: number | null;
  /** Added to the API recently: absent on older servers. */
  completedLastHour?: number;
  failedLastHour?: number;
}

export interface Me {
  user: { name: string; siteAdmin: boolean; createdAt: number };
  orgs: string[];
  namespaces: string[];
}
