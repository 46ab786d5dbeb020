// One executor name, one executor process: a second live process under a name is refused and exits saying what to
// do, while the first keeps running jobs; a process killed with -9 and restarted gets its name back once its window
// ran out; a graceful stop hands the name over at once; a process whose name was taken while it was frozen stops.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { startServerOn, type StoreKind } from '../support/storeServer.js';
import {
  onHost,
  spawnExecutor,
  startExecutor,
  tempDir,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';

const QUEUE = 'names';
/** Heartbeats every second: each process holds its name for 3 s after its last call. */
const WINDOW_MS = 3_000;
let cleanup: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const fn of cleanup.reverse()) await fn();
  cleanup = [];
});

function server(name: string, store: StoreKind): Promise<ServerHandle> {
  return startServerOn(store, name, { DOCKHAND_STALLED_JOB_TIMEOUT: '10s' }, cleanup);
}

async function executor(
  url: string,
  name: string,
  opts: { env?: NodeJS.ProcessEnv; prefix?: string[] } = {},
): Promise<ExecutorHandle> {
  const e = await startExecutor(url, {
    name,
    queues: [QUEUE],
    env: { EXECUTOR_MAXIMUM_NUM_JOBS: '1', ...opts.env },
    prefix: opts.prefix,
  });
  cleanup.push(() => e.stop());
  return e;
}

/** Another host for the second process where the test may fake one; else both run on this host, and the message says so. */
function otherHost(): { prefix?: string[]; hostname: string } {
  const prefix = onHost('other-host');
  return prefix ? { prefix, hostname: 'other-host' } : { hostname: os.hostname() };
}

function refusal(name: string, holderHost: string, thisHost: string): RegExp {
  const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const here =
    thisHost === holderHost
      ? `this one runs on host ${escape(thisHost)} too`
      : `this one runs on host ${escape(thisHost)}`;
  return new RegExp(
    `^dockhand: executor name "${escape(name)}" is in use by another executor on host ${escape(holderHost)} \\(last seen [\\d.]+m?s ago\\); ` +
      `${here}\\. Give each executor its own name with EXECUTOR_NAME=`,
    'm',
  );
}

async function listed(client: TestClient, name: string): Promise<{ hostname: string; active: boolean } | undefined> {
  const { body } = await client.call<{ executors: { name: string; hostname: string; active: boolean }[] }>(
    'GET',
    '/executors',
  );
  return body.executors.find((e) => e.name === name);
}

describe.each(['sqlite', 'postgres'] as const)('executor names, on %s', (store) => {
  it('refuses a second executor under one name: it exits with the message, and the first keeps running jobs', async () => {
    const s = await server('names-dup', store);
    const client = new TestClient(s.url);
    const name = `dup-${store}`;
    const first = await executor(s.url, name);
    const dir = await tempDir('names-dup');
    const gate = path.join(dir, 'gate');
    const running = await client.submit({
      queue: QUEUE,
      steps: [{ run: `while [ ! -f ${gate} ]; do sleep 0.05; done; echo done` }],
    });
    await client.waitFor(running.id, (j) => j.state === 'processing');

    const other = otherHost();
    const second = spawnExecutor(s.url, { name, queues: [QUEUE], prefix: other.prefix });
    cleanup.push(() => second.stop());
    expect(await second.exit()).toBe(2);
    expect(second.output).toMatch(refusal(name, os.hostname(), other.hostname));
    expect(second.output).not.toMatch(/executor registered/);
    expect(second.output, 'no stack trace').not.toMatch(/^\s+at /m);

    // The first one never noticed: the list shows it, its job finishes as attempt 1, and it takes the next one.
    expect(await listed(client, name)).toMatchObject({ hostname: os.hostname(), active: true });
    writeFileSync(gate, '');
    expect(await client.waitForState(running.id, 'completed')).toMatchObject({ attempt: 1, executorName: name });
    const next = await client.submit({ queue: QUEUE, steps: [{ run: 'echo next' }] });
    expect(await client.waitForState(next.id, 'completed')).toMatchObject({ attempt: 1, executorName: name });
    expect(first.proc.child.exitCode).toBeNull();
    expect(first.proc.output).not.toMatch(/name to another process/);
  });

  it('lets an executor killed with -9 back in under its name once its window has run out, and it runs jobs', async () => {
    const s = await server('names-kill9', store);
    const client = new TestClient(s.url);
    const name = `phoenix-${store}`;
    const first = await executor(s.url, name);
    const before = await client.submit({ queue: QUEUE, steps: [{ run: 'echo before' }] });
    await client.waitForState(before.id, 'completed');
    first.proc.signal('SIGKILL');
    await first.proc.exit();
    const killedAt = Date.now();

    const restarted = await executor(s.url, name);
    // Refused at first (the killed process had called within its window), then let in when the window ran out.
    expect(restarted.proc.output).toMatch(
      /another process holds this executor name; waiting to see whether it is still running/,
    );
    expect(Date.now() - killedAt).toBeLessThan(WINDOW_MS + 2_000);
    const after = await client.submit({ queue: QUEUE, steps: [{ run: 'echo after' }] });
    expect(await client.waitForState(after.id, 'completed')).toMatchObject({ executorName: name });
  });

  it('hands the name over at once when its executor stops gracefully', async () => {
    const s = await server('names-graceful', store);
    const client = new TestClient(s.url);
    const name = `graceful-${store}`;
    const first = await executor(s.url, name);
    // A job done first: the process is past its start, signal handlers and all.
    const job = await client.submit({ queue: QUEUE, steps: [{ run: 'true' }] });
    await client.waitForState(job.id, 'completed');
    first.proc.signal('SIGTERM');
    expect(await first.proc.exit()).toBe(0);
    const next = await executor(s.url, name);
    expect(next.proc.output).not.toMatch(/another process holds this executor name/);
  });

  it('stops an executor whose name went to another process while it was frozen, with the message', async () => {
    const s = await server('names-frozen', store);
    const client = new TestClient(s.url);
    const name = `frozen-${store}`;
    const first = await executor(s.url, name);
    first.proc.signal('SIGSTOP');
    const other = otherHost();
    // Let in once the frozen one's window has run out.
    const second = await executor(s.url, name, { prefix: other.prefix });
    first.proc.signal('SIGCONT');
    expect(await first.proc.exit()).toBe(2);
    expect(first.proc.output).toMatch(refusal(name, other.hostname, os.hostname()));
    expect(first.proc.output).toMatch(/the server gave this executor's name to another process; stopping/);

    expect(await listed(client, name)).toMatchObject({ hostname: other.hostname, active: true });
    const job = await client.submit({ queue: QUEUE, steps: [{ run: 'echo on the second' }] });
    expect(await client.waitForState(job.id, 'completed')).toMatchObject({ executorName: name });
    expect(second.proc.child.exitCode).toBeNull();
  });
});
