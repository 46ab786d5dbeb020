// Output helpers the CLI commands share: JSON or human text, aligned tables, relative times.
import { formatDuration } from '../core/units.js';

/** Prints `data` as JSON with --json, else the text `human()` returns. */
export function print(json: boolean, data: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(data, null, 2)}\n` : `${human()}\n`);
}

/** "3m ago" for a time in ms since the epoch; "-" for none. */
export function ago(ms: number | null): string {
  return ms === null ? '-' : `${formatDuration(Math.max(0, Date.now() - ms))} ago`;
}

/** Rows (the first is the header) as columns padded to their widest cell. */
export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
