// The client API (/api/v1) with the signed-in token, and the types of what it answers: the API's contract,
// src/core/api.ts and src/core/builds.ts (types only: nothing of the server's code is bundled, apart from the failure
// reasons' table, core/failureReasons.ts, the build phases' rules, core/buildPhases.ts, the size formatter,
// core/units.ts, and the SSE parser, core/sse.ts, none with imports).
import type { AttemptView, ExecutorView, JobView, QueueStatsView, responses } from '../../src/core/api';
import type {
  BuildLogEntry,
  BuildPhase,
  BuildStreamEvent,
  BuildView,
  buildResponses,
  buildTryView,
} from '../../src/core/builds';
export { BUILD_PHASES, cancellable } from '../../src/core/buildPhases';
import type { JobState } from '../../src/core/jobState';
import type { z } from 'zod';

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

export type Job = JobView;
export type Attempt = AttemptView;
export type Executor = ExecutorView;
export type Compatibility = ExecutorView['compatibility'];
export type QueueStats = QueueStatsView;
export type Me = z.infer<typeof responses.me>;

export type { BuildPhase };
export type Build = BuildView;
export type BuildTry = z.infer<typeof buildTryView>;
export type BuildDetail = z.infer<typeof buildResponses.buildDetail>;
export type BuildList = z.infer<typeof buildResponses.builds>;
export type BuildLog = BuildLogEntry;

/** The build log stream's other events (GET /builds/:id/logs?follow=true): besides `entry`, a BuildLogEntry. */
export type BuildStreamState = Extract<BuildStreamEvent, { event: 'build' }>['data'];
export type BuildStreamEnd = Extract<BuildStreamEvent, { event: 'end' }>['data'];
