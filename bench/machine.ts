// The machine a benchmark runs on: its description, and how much of its CPU other processes used during a
// measurement, so that a run disturbed by something else (another benchmark, a build) can be taken again.
import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

export function cpuModel(): string {
  const cpus = os.cpus();
  return `${cpus.length} CPUs (${cpus[0]?.model.trim() ?? '?'})`;
}

/** "2 CPUs (…), 24 GiB RAM, Linux 6.1…" */
export function describeMachine(): string {
  return `${cpuModel()}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, ${os.type()} ${os.release()}`;
}

const TICK = 100; // USER_HZ: /proc reports CPU times in 1/100 s on Linux

function machineBusy(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - f[3] - f[4]) / TICK;
}

/** pid → [ppid, own CPU s + reaped children's CPU s] for every process. */
function processTable(): Map<number, [number, number]> {
  const table = new Map<number, [number, number]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // After the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state.
      table.set(Number(e), [Number(f[1]), (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICK]);
    } catch {
      // gone
    }
  }
  return table;
}

/**
 * CPU seconds used so far by this process and its live descendants (servers, executors, workers, redis-server,
 * runuser and the PostgreSQL cluster), counting the children each of them has reaped: every process of ours once.
 */
function ourCpu(): number {
  const table = processTable();
  const ours = new Set([process.pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, [ppid]] of table) {
      if (!ours.has(pid) && ours.has(ppid)) {
        ours.add(pid);
        grew = true;
      }
    }
  }
  let sum = 0;
  for (const pid of ours) sum += table.get(pid)?.[1] ?? 0;
  return sum;
}

/** Runs `fn` and returns its result with the share of the machine's CPU that other processes used meanwhile. */
export async function measured<T>(fn: () => Promise<T>): Promise<{ result: T; others: number }> {
  const m0 = machineBusy();
  const o0 = ourCpu();
  const t0 = performance.now();
  const result = await fn();
  const secs = (performance.now() - t0) / 1000;
  const others = Math.max(0, machineBusy() - m0 - (ourCpu() - o0));
  return { result, others: others / (secs * os.cpus().length) };
}

/**
 * Waits (up to `maxWaitMs`) until other processes use at most `disturbed` of the CPU over 2 s, so that a run does
 * not start while something else is busy. Returns the last share seen.
 */
export async function waitQuiet(disturbed: number, maxWaitMs: number): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  let announced = false;
  for (;;) {
    const { others } = await measured(() => new Promise<void>((resolve) => setTimeout(resolve, 2_000)));
    if (others <= disturbed || Date.now() > deadline) return others;
    if (!announced)
      console.error(`  other processes use ${Math.round(100 * others)}% of the CPU: waiting for a quiet machine`);
    announced = true;
  }
}

/**
 * Runs a measurement until other processes used at most `disturbed` of the CPU during it (up to `maxTries` times,
 * each after waiting for a quiet machine). Returns the last try with the share others used and the number of tries.
 */
export async function undisturbed<T>(
  fn: () => Promise<T>,
  o: { disturbed: number; maxTries: number; quietWaitMs: number; label: string },
): Promise<{ result: T; others: number; tries: number }> {
  for (let tries = 1; ; tries++) {
    await waitQuiet(o.disturbed, o.quietWaitMs);
    const { result, others } = await measured(fn);
    if (others <= o.disturbed || tries >= o.maxTries) return { result, others, tries };
    console.error(`  ${o.label}: other processes used ${Math.round(100 * others)}% of the CPU: running again`);
  }
}
