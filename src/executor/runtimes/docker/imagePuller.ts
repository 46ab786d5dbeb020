// Pulls a step's image when the engine lacks it, writing the progress into the step's log: one line per layer
// state change (not every progress tick), so a pull reads like `docker pull` without flooding the log.
import { createHash } from 'node:crypto';
import type Docker from 'dockerode';
import type { FailureReason } from '../../../core/failureReasons.js';
import { JobFailure } from '../runtime.js';
import type { ChosenCredential } from './registryAuth.js';

interface PullEvent {
  status?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
}

/** "alpine" → "alpine:latest": without a tag the engine would pull every tag of the repository. */
export function withDefaultTag(image: string): string {
  const lastPart = image.slice(image.lastIndexOf('/') + 1);
  return lastPart.includes(':') || image.includes('@') ? image : `${image}:latest`;
}

/** Registry answers that trying again cannot fix: access refused, or no such image. */
const DENIED = /unauthorized|denied|authentication required|no basic auth/i;
const NOT_FOUND = /not found|manifest unknown|invalid reference|repository name must/i;

/** What a failed pull amounts to: anything but a refusal or a missing image may pass (a registry that is down). */
export function pullFailureReason(message: string): FailureReason {
  if (DENIED.test(message)) return 'image_pull_denied';
  if (NOT_FOUND.test(message)) return 'image_not_found';
  return 'image_pull_failure';
}

export class ImagePuller {
  /** Pulls under way, so two jobs wanting the same image (with the same credentials) share one pull. */
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(private readonly docker: Docker) {}

  /** `chooseCredential` runs only when a pull is needed: an image the engine has costs no credential lookup. */
  async ensure(
    image: string,
    chooseCredential: () => Promise<ChosenCredential>,
    note: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const ref = withDefaultTag(image);
    if (await this.present(ref)) return;
    const credential = await chooseCredential();
    note(`[dockhand] pulling ${ref} from ${credential.registry} with ${credential.source}`);
    // Shared only between pulls with the same credential: a job never gets an image through another job's rights.
    const key = `${ref}\n${createHash('sha256')
      .update(JSON.stringify(credential.auth ?? null))
      .digest('hex')}`;
    for (;;) {
      const shared = this.inFlight.get(key);
      if (!shared) {
        const pull = this.pull(ref, credential, note, signal).finally(() => this.inFlight.delete(key));
        this.inFlight.set(key, pull);
        return pull;
      }
      note('[dockhand] another job is pulling this image; waiting for it');
      try {
        // This job's own cancel must not wait for the other job's pull.
        return await Promise.race([shared, stopped(signal, ref)]);
      } catch (err) {
        // The job that was pulling was stopped, not this one: pull it ourselves.
        if (err instanceof PullStopped && !signal.aborted) continue;
        throw err;
      }
    }
  }

  /** Whether the engine has the image. */
  async present(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false;
      throw err;
    }
  }

  private async pull(
    ref: string,
    credential: ChosenCredential,
    note: (line: string) => void,
    signal: AbortSignal,
  ): Promise<void> {
    let stream: NodeJS.ReadableStream;
    try {
      // The engine may answer only once the registry does: the signal also ends the wait for that answer.
      const opts = { abortSignal: signal, ...(credential.auth ? { authconfig: credential.auth } : {}) };
      stream = (await this.docker.pull(ref, opts)) as NodeJS.ReadableStream;
    } catch (err) {
      if (signal.aborted) throw new PullStopped(ref);
      throw pullError(ref, (err as { json?: { message?: string } }).json?.message ?? (err as Error).message);
    }
    const lastStatus = new Map<string, string>();
    let onAbort = (): void => undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        // A destroyed stream may end without 'end' or 'error': settle here rather than wait on it.
        onAbort = () => {
          (stream as unknown as { destroy(): void }).destroy();
          reject(new PullStopped(ref));
        };
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        this.docker.modem.followProgress(
          stream,
          (err: Error | null) => (err ? reject(pullError(ref, err.message)) : resolve()),
          (event: PullEvent) => {
            if (event.error) return reject(pullError(ref, event.errorDetail?.message ?? event.error));
            if (!event.status) return;
            if (!event.id) return note(`[dockhand] ${event.status}`);
            // Progress ticks repeat the same status with new numbers: print a layer only when its state changes.
            if (lastStatus.get(event.id) === event.status) return;
            lastStatus.set(event.id, event.status);
            const total = event.progressDetail?.total;
            note(`[dockhand] ${event.id}: ${event.status}${total ? ` (${formatBytes(total)})` : ''}`);
          },
        );
      });
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }
}

/** The job that pulled was stopped (cancel, timeout, shutdown). */
class PullStopped extends JobFailure {
  constructor(ref: string) {
    super('image_pull_failure', `pulling ${ref} was stopped`);
  }
}

/** Rejects when `signal` aborts. */
function stopped(signal: AbortSignal, ref: string): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(new PullStopped(ref));
    else signal.addEventListener('abort', () => reject(new PullStopped(ref)), { once: true });
  });
}

function pullError(ref: string, message: string): JobFailure {
  return new JobFailure(pullFailureReason(message), `cannot pull image ${ref}: ${message}`);
}

function formatBytes(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.ceil(n / 1e3)} kB`;
}
