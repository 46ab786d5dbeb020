// Slows down credential guessing: counts the 401 answers each source address gets in a fixed window, and once an
// address has used up its allowance, refuses its authenticated requests with 429 until the window ends, without
// looking at their credentials (so a blocked guesser learns nothing). State is in memory, per server replica.
import net from 'node:net';

export const DEFAULT_AUTH_FAILURE_LIMIT = 30;
export const DEFAULT_AUTH_FAILURE_WINDOW_MS = 60_000;
/** Addresses tracked at once; past this the oldest windows are forgotten, so a spray of addresses costs bounded memory. */
const MAX_TRACKED = 100_000;

export interface AuthLimiterOptions {
  /** 401 answers an address may get per window; 0 turns the limiter off. */
  limit: number;
  windowMs: number;
}

interface Window {
  startedAt: number;
  failures: number;
}

/**
 * The key an address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64, the block one
 * host or customer usually gets, so rotating through addresses of one network does not reset the count.
 */
export function addressKey(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  if (net.isIPv6(ip)) {
    const [head = '', tail = ''] = ip.split('::');
    const headParts = head ? head.split(':') : [];
    const tailParts = tail ? tail.split(':') : [];
    // Expand "::" into the missing zero groups, then keep the first four groups.
    const groups = ip.includes('::')
      ? [...headParts, ...Array(Math.max(0, 8 - headParts.length - tailParts.length)).fill('0'), ...tailParts]
      : headParts;
    return `${groups
      .slice(0, 4)
      .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
      .join(':')}::/64`;
  }
  return ip;
}

export class AuthFailureLimiter {
  private readonly windows = new Map<string, Window>();
  private lastSweep = 0;

  constructor(readonly options: AuthLimiterOptions) {}

  get enabled(): boolean {
    return this.options.limit > 0;
  }

  /** How long `ip` must still wait, in ms, when it is over its allowance; undefined when it may go on. */
  blockedFor(ip: string, now = Date.now()): number | undefined {
    if (!this.enabled) return undefined;
    const key = addressKey(ip);
    const window = this.windows.get(key);
    if (!window) return undefined;
    const endsAt = window.startedAt + this.options.windowMs;
    if (now >= endsAt) {
      this.windows.delete(key);
      return undefined;
    }
    return window.failures >= this.options.limit ? endsAt - now : undefined;
  }

  /** Counts one 401 answer to `ip`; returns true when this one used up the allowance (the address is now blocked). */
  recordFailure(ip: string, now = Date.now()): boolean {
    if (!this.enabled) return false;
    const key = addressKey(ip);
    let window = this.windows.get(key);
    if (!window || now >= window.startedAt + this.options.windowMs) {
      this.windows.delete(key);
      window = { startedAt: now, failures: 0 };
      this.windows.set(key, window);
      this.trim(now);
    }
    window.failures++;
    return window.failures === this.options.limit;
  }

  /** Addresses currently tracked (for tests). */
  get size(): number {
    return this.windows.size;
  }

  private trim(now: number): void {
    if (now - this.lastSweep >= this.options.windowMs) {
      this.lastSweep = now;
      for (const [key, window] of this.windows)
        if (now >= window.startedAt + this.options.windowMs) this.windows.delete(key);
    }
    if (this.windows.size <= MAX_TRACKED) return;
    // Insertion order is window start order: forget the oldest windows, which are the first to end anyway.
    for (const key of this.windows.keys()) {
      if (this.windows.size <= MAX_TRACKED * 0.9) break;
      this.windows.delete(key);
    }
  }
}
