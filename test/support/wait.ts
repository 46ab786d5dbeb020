import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` until it gives something truthy, and returns that; fails naming `what` after `timeoutMs`, or at
 * once when `broken` gives a reason (the process under test exited, say), instead of waiting out the timeout.
 */
export async function until<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 30_000,
  everyMs = 50,
  broken?: () => string | undefined,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const reason = broken?.();
    if (reason) throw new Error(`gave up waiting until ${what}: ${reason}`);
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(everyMs);
  }
}
