// Durations ("90s", "5m", "1h30m", "250ms" or a number of seconds) and sizes ("512M", "2G", "1.5Gi" or bytes),
// as users write them in job specs and environment variables.

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
const DURATION_WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;
const DURATION_UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds for a duration, or undefined when the text is not one. A bare number means seconds. */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.round(input * 1000) : undefined;
  const text = input.trim();
  if (/^\d+(?:\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  if (!DURATION_WHOLE.test(text)) return undefined;
  let total = 0;
  for (const match of text.matchAll(DURATION_PART)) total += Number(match[1]) * DURATION_UNIT_MS[match[2]];
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  if (Math.round(ms) < 1000) return `${Math.round(ms)}ms`;
  // Round once, then split, so rounding carries (1m59.6s is "2m", never "1m60s").
  const tenths = Math.round(ms / 100);
  if (tenths < 600) return `${tenths % 10 === 0 ? tenths / 10 : (tenths / 10).toFixed(1)}s`;
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  return [h ? `${h}h` : '', m ? `${m}m` : '', s ? `${s}s` : ''].join('') || '0s';
}

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgt])?i?b?$/i;

/**
 * Bytes for a size, or undefined when the text is not one. Units are binary, as `docker run --memory 512m` and
 * Sourcegraph's EXECUTOR_JOB_MEMORY read them: "512M", "512m", "512Mi" and "512MB" are all 512 MiB.
 */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? Math.round(input) : undefined;
  const match = SIZE.exec(input.trim());
  if (!match) return undefined;
  const power = match[2] ? ' kmgt'.indexOf(match[2].toLowerCase()) : 0;
  return Math.round(Number(match[1]) * 2 ** (10 * power));
}

/** "512Mi", "1.5Gi", "300B": binary units, the way parseSize reads them back. */
export function formatSize(bytes: number): string {
  const units = ['B', 'Ki', 'Mi', 'Gi', 'Ti'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)}${units[unit]}`;
}
