// One executor name, one executor process. Two processes that default to one hostname would otherwise share an
// identity: one row on the executors list where two run, and each one's docker janitor removing the other's
// containers. Each process sends a random instance id; the instance that holds a name keeps it while it is live,
// and another one gets it only after the holder has been silent for its window (how a restarted executor gets back
// in after a crash or kill -9). The stores apply `mayUseName` in SQL, in one statement, so replicas agree.
import { formatDuration } from './units.js';

/** The heartbeat interval assumed for an instance that does not declare one (the bundled executor's default). */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;

/** Beats an instance may miss before another may take its name. */
const MISSED_BEATS = 3;

/** The process that holds an executor name, as the store remembers it. */
export interface ExecutorInstance {
  id: string;
  hostname: string;
  /** When the server last accepted a call from it. */
  seenAt: number;
  /** How long after `seenAt` it still holds the name. */
  windowMs: number;
}

/**
 * How long an instance holds its name after each call: three of its heartbeat intervals, so one slow or lost beat
 * does not cost it the name; at most the stall timeout, after which its jobs are reset anyway.
 */
export function instanceWindowMs(heartbeatIntervalMs: number | undefined, stalledJobTimeoutMs: number): number {
  return Math.min(MISSED_BEATS * (heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS), stalledJobTimeoutMs);
}

/** Whether `instanceId` may act under a name that `holder` (if any) holds: it is the holder, or the holder went silent. */
export function mayUseName(holder: ExecutorInstance | undefined, instanceId: string, now: number): boolean {
  return !holder || holder.id === instanceId || holder.seenAt + holder.windowMs <= now;
}

/** The refusal, for the operator who started the second process: which name, which hosts, and what to do. */
export function nameInUseMessage(
  name: string,
  holder: ExecutorInstance,
  thisHostname: string | undefined,
  now: number,
): string {
  const here =
    thisHostname === undefined
      ? 'this one is another process'
      : thisHostname === holder.hostname
        ? `this one runs on host ${thisHostname} too`
        : `this one runs on host ${thisHostname}`;
  return (
    `executor name "${name}" is in use by another executor on host ${holder.hostname} ` +
    `(last seen ${formatDuration(Math.max(0, now - holder.seenAt))} ago); ${here}. ` +
    `Give each executor its own name with EXECUTOR_NAME=... (e.g. EXECUTOR_NAME=${name}-2).`
  );
}
