// The seam between the build manager and where workers run: a control plane starts one ephemeral worker per try,
// hands it its registration token out of band (never on a command line another user can read, never in a log), stops
// it, and counts the workers it runs. Implementations: process, docker, kubernetes, command (operator scripts).
import type { PlaneConfig } from '../buildsConfig.js';

export interface WorkerLaunch {
  buildId: number;
  tryNumber: number;
  /** Chosen by the manager, unique per try; the plane names its worker after it, so stop() needs nothing else. */
  executionId: string;
  registrationToken: string;
  /** How the worker reaches this server. */
  serverUrl: string;
  /** The most the build may run; planes that can (Kubernetes) set it as the worker's deadline. */
  maxBuildS: number;
}

export interface ControlPlane {
  readonly name: string;
  readonly config: PlaneConfig;
  /** Starts a worker; throws PlaneError when this plane cannot (the manager then falls back to the next one). */
  start(launch: WorkerLaunch): Promise<void>;
  /** Stops a worker and removes what it left; a worker that is already gone is not an error. */
  stop(executionId: string): Promise<void>;
  /** Workers of this plane running now, as the plane sees them. */
  running(): Promise<number>;
  /** Lets go of the plane's connections; workers keep running (another replica may own them). */
  close(): Promise<void>;
}

/** A plane could not start (or stop) a worker; the message says why, for the build's log. */
export class PlaneError extends Error {}

/** Executions are named dockhand-build-<build>-<try>-<random>: the prefix finds them, the rest keeps them apart. */
export const EXECUTION_PREFIX = 'dockhand-build-';

/** The label (docker, kubernetes) every worker carries, with the name of the plane that started it. */
export const PLANE_LABEL = 'dockhand.dev/build-plane';
export const BUILD_LABEL = 'dockhand.dev/build';
