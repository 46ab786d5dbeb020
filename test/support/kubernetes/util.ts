// Small helpers shared by the parts of the Kubernetes API double.
import { randomBytes, randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';

/** A stored API object as raw JSON. The double works on plain JSON, as the apiserver's unstructured paths do. */
export type KubeObject = Record<string, any>;

/** Timestamps as the API writes them (metav1.Time): RFC3339 at second precision. */
export function timestamp(date: Date = new Date()): string {
  return date.toISOString().replace(/\.\d+Z$/, 'Z');
}

export function clone<T>(value: T): T {
  return structuredClone(value);
}

export function sameJson(a: unknown, b: unknown): boolean {
  return isDeepStrictEqual(a, b);
}

export function newUid(): string {
  return randomUUID();
}

/** The alphabet and length apiserver uses for generateName (no vowels, no look-alike digits). */
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
export function randomNameSuffix(length = 5): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += NAME_ALPHABET[b % NAME_ALPHABET.length];
  return out;
}

export function isPlainObject(value: unknown): value is KubeObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A promise with its resolve function in hand. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** An error's text; for the Docker engine's errors, the engine's own message without dockerode's "(HTTP code …)". */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const json = (err as { json?: { message?: unknown } }).json;
    if (json && typeof json.message === 'string') return json.message.trim();
    return err.message.replace(/^\(HTTP code \d+\) [^-]*- /, '').trim();
  }
  return String(err);
}

/** dockerode errors carry the engine's HTTP status. */
export function dockerStatus(err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown })?.statusCode;
  return typeof code === 'number' ? code : undefined;
}
