import type { ReactNode } from 'react';
import { ApiError, type BuildPhase, type JobState } from './api';
import { absoluteTime, relativeTime } from './time';

export function Ago({ ms, now }: { ms: number | null | undefined; now?: number }) {
  return (
    <time dateTime={ms ? new Date(ms).toISOString() : undefined} title={absoluteTime(ms)}>
      {relativeTime(ms, now)}
    </time>
  );
}

export function StateBadge({ state, cancelRequested }: { state: JobState; cancelRequested?: boolean }) {
  return (
    <span className={`state state-${state}`} data-testid="job-state">
      {state}
      {cancelRequested && state === 'processing' ? ' (canceling)' : ''}
    </span>
  );
}

/** A build's phase; an internal error that will be tried again says so. */
export function PhaseBadge({ phase, final = true }: { phase: BuildPhase; final?: boolean }) {
  return (
    <span className={`state phase-${phase}`} data-testid="build-phase" data-phase={phase}>
      {phase}
      {phase === 'internalerror' && !final ? ' (retrying)' : ''}
    </span>
  );
}

export function PageHeader({
  title,
  children,
  loading,
}: {
  title: ReactNode;
  children?: ReactNode;
  loading?: boolean;
}) {
  return (
    <div className="page-header">
      <h1>{title}</h1>
      {loading && <span className="spinner" aria-label="loading" />}
      <div className="spacer" />
      {children}
    </div>
  );
}

export function ErrorBox({ error }: { error: Error | undefined }) {
  if (!error) return null;
  const forbidden = error instanceof ApiError && error.status === 403;
  return (
    <div className={forbidden ? 'notice' : 'error-box'} role="alert">
      {forbidden ? <strong>Site admins only. </strong> : null}
      {error.message}
    </div>
  );
}
