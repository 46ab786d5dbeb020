// Whether the database takes writes. A write refused for want of space, or because the database became read-only,
// makes the server unhealthy: /healthz says why and new work (submits, retries, dequeues) is refused with 503, so
// nothing is accepted that could not be kept. Running jobs' logs and results are still tried: executors keep and
// resend what is refused. A probe write, and for SQLite enough free space in the data directory, make it healthy again.
import { statfs } from 'node:fs/promises';
import type { FastifyBaseLogger } from 'fastify';
import type { Gauge } from 'prom-client';
import { formatSize } from '../core/units.js';
import { unwritableReason } from '../store/open.js';
import type { StorageFault, Store } from '../store/store.js';
import { HttpError } from './httpError.js';

export interface StorageProblem {
  kind: StorageFault['kind'] | 'low-disk';
  /** For operators: what is wrong and what to do. */
  reason: string;
  since: number;
}

export interface StorageHealthOptions {
  store: Store;
  log: FastifyBaseLogger;
  /** The SQLite data directory, whose free space is watched; none for PostgreSQL (its disk is not ours to see). */
  dataDir?: string;
  /** Below this many free bytes in dataDir, no new work is taken (DOCKHAND_MIN_FREE_DISK; 0: never). */
  minFreeBytes: number;
  gauge?: Gauge;
  /** How often to check while healthy; while unhealthy, five times as often. */
  intervalMs?: number;
}

const ADVICE: Record<StorageProblem['kind'], string> = {
  'disk-full': 'free space on the database disk',
  'low-disk': 'free space on the data directory disk, or lower DOCKHAND_MIN_FREE_DISK',
  'read-only':
    'make the database writable again (a read-only mount, or a PostgreSQL standby or read-only transaction default)',
  'io-error': 'check the disk and the server log',
  unreachable: 'check that the database is up and reachable',
};

const DEFAULT_INTERVAL_MS = 5_000;

export class StorageHealth {
  private problem: StorageProblem | undefined;
  /** When a write last met a fault: recovery waits for a quiet spell (see check). */
  private lastFaultAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking = false;
  private readonly intervalMs: number;

  constructor(private readonly opts: StorageHealthOptions) {
    this.intervalMs = opts.intervalMs ?? DEFAULT_INTERVAL_MS;
    opts.gauge?.set(1);
  }

  /** Undefined while the database takes writes. */
  get current(): StorageProblem | undefined {
    return this.problem;
  }

  /** The fault an error shows, if it is one; a fault other than an unreachable database also makes the server unhealthy. */
  noteError(err: unknown): StorageFault | undefined {
    const fault = this.opts.store.storageFault(err);
    // An unreachable database is already what /healthz's ping reports; it needs no probe to clear.
    if (fault && fault.kind !== 'unreachable') this.fail(fault.kind, fault.detail);
    return fault;
  }

  /** Throws a 503 that says why while the server takes no new work. */
  refuseNewWork(): void {
    if (!this.problem) return;
    throw new HttpError(
      503,
      `the server takes no new work now: ${this.problem.reason}. Nothing was stored; try again once GET /healthz answers 200.`,
      {
        code: 'STORAGE_UNAVAILABLE',
        storage: this.problem.kind,
      },
    );
  }

  /** Checks free space and that a write goes through; what the timer runs. */
  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const low = await this.lowDisk();
      if (low) return this.fail('low-disk', low);
      await this.opts.store.probeWrite(Date.now());
      // A probe can pass while the disk is still full (PostgreSQL rewrites the probe's row within its page): only
      // a spell without failed writes, from the executors' retries too, counts as recovered.
      if (Date.now() - this.lastFaultAt >= this.intervalMs) this.recover();
    } catch (err) {
      this.noteError(err);
    } finally {
      this.checking = false;
    }
  }

  start(): void {
    const tick = async (): Promise<void> => {
      await this.check();
      this.timer = setTimeout(() => void tick(), this.problem ? Math.max(100, this.intervalMs / 5) : this.intervalMs);
      this.timer.unref();
    };
    void tick();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async lowDisk(): Promise<string | undefined> {
    const { dataDir, minFreeBytes } = this.opts;
    if (!dataDir || minFreeBytes <= 0) return undefined;
    const stats = await statfs(dataDir);
    const free = stats.bavail * stats.bsize;
    if (free >= minFreeBytes) return undefined;
    return `only ${formatSize(free)} free on the disk of the data directory ${dataDir}, under DOCKHAND_MIN_FREE_DISK (${formatSize(minFreeBytes)})`;
  }

  private fail(kind: StorageProblem['kind'], detail: string): void {
    this.lastFaultAt = Date.now();
    // The first reason stands while the kind of fault lasts; requests that meet it again change nothing.
    if (this.problem?.kind === kind) return;
    // SQLite says "disk I/O error" for a file system the kernel turned read-only: the directory itself tells which.
    const dirProblem =
      this.opts.dataDir && (kind === 'read-only' || kind === 'io-error')
        ? unwritableReason(this.opts.dataDir)
        : undefined;
    const where = dirProblem ? `; the data directory ${this.opts.dataDir} ${dirProblem}` : '';
    const reason =
      kind === 'low-disk'
        ? `${detail}; ${ADVICE[kind]}`
        : `the database cannot take writes (${kind}: ${detail}${where}); ${ADVICE[kind]}`;
    this.problem = { kind, reason, since: Date.now() };
    this.opts.gauge?.set(0);
    // Once per change, not per refused request: a full disk should not also fill with log lines.
    this.opts.log.error({ storage: kind, reason }, 'storage unhealthy: taking no new work until it recovers');
  }

  private recover(): void {
    if (!this.problem) return;
    this.opts.log.warn(
      { storage: this.problem.kind, unhealthyForMs: Date.now() - this.problem.since },
      'storage healthy again: taking new work',
    );
    this.problem = undefined;
    this.opts.gauge?.set(1);
  }
}
