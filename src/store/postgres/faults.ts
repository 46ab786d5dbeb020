// PostgreSQL errors that say the database cannot take writes now, as opposed to a bug or a refused statement.
import type { StorageFault } from '../store.js';

/** SQLSTATE classes and codes: https://www.postgresql.org/docs/current/errcodes-appendix.html */
const BY_SQLSTATE: Record<string, StorageFault['kind']> = {
  '53100': 'disk-full',
  '25006': 'read-only', // read_only_sql_transaction: a standby, or default_transaction_read_only after a failover
  '58030': 'io-error',
  '57P01': 'unreachable', // admin_shutdown
  '57P02': 'unreachable', // crash_shutdown
  '57P03': 'unreachable', // cannot_connect_now
};
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

export function postgresFault(err: unknown): StorageFault | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    const kind =
      BY_SQLSTATE[code] ??
      (code.startsWith('08') ? 'unreachable' : NETWORK_CODES.has(code) ? 'unreachable' : undefined);
    if (kind) return { kind, detail: `${code}: ${err.message}` };
  }
  // A new connection to a database whose disk is full fails while writing its relation cache file (XX000, FATAL).
  if (/could not write init file/.test(err.message)) return { kind: 'disk-full', detail: err.message };
  // node-postgres reports a dropped connection and a pool that could not connect in time by message only.
  if (
    /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
      err.message,
    )
  ) {
    return { kind: 'unreachable', detail: err.message };
  }
  return undefined;
}
