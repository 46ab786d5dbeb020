// A build's phases (Quay's names) and the rules on them, with no imports at run time so the web UI bundles them as
// they are: the server, the CLI and the UI read one list.

export const BUILD_PHASES = [
  'waiting',
  'build-scheduled',
  'unpacking',
  'pulling',
  'building',
  'pushing',
  'complete',
  'error',
  'internalerror',
  'cancelled',
] as const;
export type BuildPhase = (typeof BUILD_PHASES)[number];

/** The phases a worker may set; the manager sets the rest. */
export const WORKER_PHASES = ['unpacking', 'pulling', 'building', 'pushing'] as const;
export type WorkerPhase = (typeof WORKER_PHASES)[number];

/** A build in one of these never changes phase again (Quay's ARCHIVABLE_BUILD_PHASES). */
export const ARCHIVED_PHASES: ReadonlySet<BuildPhase> = new Set(['complete', 'error', 'cancelled']);
/**
 * Cancel is refused from these. Quay's PHASES_NOT_ALLOWED_TO_CANCEL_FROM also lists internalerror; here a build in
 * internalerror that waits for its retry may be cancelled (one that is final may not).
 */
export const NOT_CANCELLABLE_PHASES: ReadonlySet<BuildPhase> = new Set(['pushing', 'complete', 'error', 'cancelled']);

export function cancellable(build: { phase: BuildPhase; final: boolean }): boolean {
  return !build.final && !NOT_CANCELLABLE_PHASES.has(build.phase);
}

/** How a try ended, as Quay's BuildJobResult: expired spends the try, incomplete gives it back. */
export const TRY_OUTCOMES = ['complete', 'error', 'expired', 'incomplete', 'cancelled', 'unscheduled'] as const;
export type TryOutcome = (typeof TRY_OUTCOMES)[number];

/** `dockhand build submit --follow` and `build logs --follow` exit with these. */
export const BUILD_EXIT_CODES: Partial<Record<BuildPhase, number>> = {
  complete: 0,
  error: 1,
  cancelled: 2,
  internalerror: 3,
};
