// The admin web UI in a real browser (Debian's chromium, driven by playwright-core) against a real server and a
// real shell executor: sign in, jobs, a live log, cancel, executors (one flagged), queues, a 100k-line log.
// Screenshots of each page go to test-output/ui/.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient, http } from '../support/api.js';
import { openBrowser } from '../support/browser.js';
import {
  ADMIN_TOKEN,
  EXECUTORS_TOKEN,
  OUTPUT_DIR,
  startExecutor,
  startServer,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';

const SHOTS = path.join(OUTPUT_DIR, 'ui');

let server: ServerHandle;
let executor: ExecutorHandle;
let client: TestClient;
let browser: Browser;
let page: Page;
const problems: string[] = [];
let fakeBeat: NodeJS.Timeout | undefined;

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/**
 * Two executors whose Dockhand versions are more than one minor away from the server's 0.2.x: one behind (and from
 * before disk limits: it reports CPU and memory only), one ahead.
 */
async function fakeHeartbeat(): Promise<void> {
  const GiB = 2 ** 30;
  for (const [executorName, version, hostname, resources] of [
    ['ui-future', '1.5.0', 'future.internal', { cpus: 2, memoryBytes: 4 * GiB, diskBytes: 20 * GiB }],
    ['ui-old', '0.0.9', 'old.internal', { cpus: 1, memoryBytes: 2 * GiB }],
  ] as const) {
    const answer = await http(`${server.url}/api/executor/v1/heartbeat`, 'POST', `token-executor ${EXECUTORS_TOKEN}`, {
      executorName,
      hostname,
      os: 'linux',
      arch: 'arm64',
      version,
      runtime: 'docker',
      runtimeVersion: 'docker 28.0.1',
      queues: ['gpu'],
      maxJobs: 2,
      resources,
      jobs: [],
      waitMs: 0,
    });
    if (answer.status !== 200) throw new Error(`fake heartbeat: ${answer.status} ${JSON.stringify(answer.body)}`);
  }
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await startServer({ name: 'ui-server' });
  client = new TestClient(server.url);
  executor = await startExecutor(server.url, { name: 'ui-exec', queues: ['ui'] });
  ({ browser, page } = await openBrowser(problems));
});

afterAll(async () => {
  if (fakeBeat) clearInterval(fakeBeat);
  await browser?.close();
  await executor?.stop();
  await server?.stop();
});

describe('web UI', () => {
  it('serves the page at / and deep links, while API paths keep their JSON 404', async () => {
    for (const p of ['/', '/jobs/12345', '/executors']) {
      const res = await fetch(`${server.url}${p}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html/);
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(await res.text()).not.toMatch(/<script>(?!<)/);
    }
    for (const p of ['/api/v1/nothing', '/api/nothing', '/metrics/nothing', '/assets/missing-0000.js']) {
      const res = await fetch(`${server.url}${p}`);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { error: string }).error).toMatch(/^no route GET/);
    }
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    const html = await (await fetch(`${server.url}/`)).text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)![1];
    const asset = await fetch(`${server.url}${script}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(asset.headers.get('cache-control')).toContain('immutable');
  });

  it('refuses a wrong token, signs in with the admin token and shows the user', async () => {
    await page.goto(`${server.url}/`);
    await page.getByLabel('API token').waitFor();
    await shot('signin');
    await page.getByLabel('API token').fill('dha_wrong_token_000000000000000000');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByText('That token was not accepted.').waitFor();
    await page.getByLabel('API token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByTestId('user').textContent()).toBe('admin');
    await expect.poll(() => new URL(page.url()).pathname).toBe('/jobs');
    // The token is kept for the tab: a reload stays signed in.
    await page.reload();
    await page.getByTestId('user').waitFor();
  });

  it('streams a job log live with its colours, then shows the exit code and duration', async () => {
    const job = await client.submit({
      queue: 'ui',
      steps: [
        { key: 'prepare', run: 'echo preparing' },
        {
          key: 'slow',
          run: "i=1\nwhile [ $i -le 12 ]; do printf '\\033[32mok\\033[0m line %d \\033[1;31mred\\033[0m\\n' $i; sleep 0.4; i=$((i+1)); done\necho 'a warning' >&2",
        },
      ],
    });
    await page.goto(`${server.url}/jobs/${job.id}`);
    const log = page.getByTestId('log');
    await log.getByText('line 2 ', { exact: false }).waitFor({ timeout: 20_000 });
    // Seen before the last line was printed: it arrived live, not with a reload.
    expect(await log.getByText('line 12 ', { exact: false }).count()).toBe(0);
    await expect.poll(() => page.getByTestId('stream-status').textContent()).toBe('live');
    await shot('job-live');
    await log.getByText('line 12 ', { exact: false }).waitFor({ timeout: 20_000 });
    const green = log.locator('.log-line', { hasText: 'line 3 ' }).locator('span.af2');
    expect(await green.textContent()).toBe('ok');
    expect(await log.locator('.log-line', { hasText: 'line 3 ' }).locator('span.af1.a-b').textContent()).toBe('red');
    await expect.poll(() => page.getByTestId('job-state').textContent(), { timeout: 20_000 }).toBe('completed');
    await expect.poll(() => page.getByTestId('stream-status').textContent()).toBe('complete');
    const results = await page.getByTestId('step-result').allTextContents();
    expect(results).toHaveLength(2);
    for (const r of results) expect(r).toMatch(/^exit 0 · [\d.]+ (ms|s)$/);
    expect(await log.locator('.log-line.stderr', { hasText: 'a warning' }).count()).toBe(1);
    expect(await page.getByTestId('spec').textContent()).toContain('queue: ui');
    await shot('job-completed');
  });

  it('lists jobs with filters and paging', async () => {
    // 60 quick jobs in a queue no executor serves: more than one page.
    for (let i = 0; i < 60; i++) await client.submit({ queue: 'ui-idle', steps: [{ run: `echo ${i}` }] });
    await page.goto(`${server.url}/jobs`);
    await page.getByTestId('jobs').waitFor();
    await shot('jobs');
    expect(await page.locator('tr[data-job]').count()).toBe(50);
    await page.getByRole('button', { name: 'Older →' }).click();
    await expect.poll(() => page.locator('tr[data-job]').count()).toBeGreaterThan(0);
    expect(new URL(page.url()).searchParams.get('before')).toMatch(/^\d+$/);
    await page.getByRole('button', { name: '← Newer' }).click();
    await expect.poll(() => page.locator('tr[data-job]').count()).toBe(50);
    await page.locator('select[name=state]').selectOption('completed');
    await expect.poll(() => page.locator('tr[data-job]').count()).toBe(1);
    expect(new URL(page.url()).searchParams.get('state')).toBe('completed');
    await page.locator('input[name=queue]').fill('ui-idle');
    await page.locator('select[name=state]').selectOption('queued');
    await expect.poll(() => page.locator('tr[data-job]').count()).toBe(50);
  });

  it('shows queue depth and the hour counts', async () => {
    await page.goto(`${server.url}/queues`);
    const row = page.locator('tr[data-queue="ui-idle"]');
    await row.waitFor();
    expect(await row.locator('td').nth(1).textContent()).toBe('60');
    await shot('queues');
  });

  it('cancels a running job from its page and shows the state change', async () => {
    const job = await client.submit({
      queue: 'ui',
      steps: [{ key: 'forever', run: 'echo started\nwhile true; do sleep 1; echo tick; done' }],
    });
    await page.goto(`${server.url}/jobs/${job.id}`);
    await page.getByTestId('log').getByText('started').waitFor({ timeout: 20_000 });
    await expect.poll(() => page.getByTestId('job-state').textContent()).toBe('processing');
    await page.getByTestId('cancel').click();
    await expect.poll(() => page.getByTestId('job-state').textContent(), { timeout: 15_000 }).toBe('canceled');
    expect(await page.getByTestId('cancel').isDisabled()).toBe(true);
    expect(await page.getByTestId('retry').isEnabled()).toBe(true);
    expect((await client.job(job.id)).job.state).toBe('canceled');
    await expect.poll(() => page.getByTestId('failure-reason').textContent()).toBe('canceled (canceled)');
    expect(await page.getByTestId('failure-message').textContent()).toBe('canceled by a user');
    await expect.poll(() => page.getByTestId('attempt-reason').allTextContents()).toEqual(['canceled (canceled)']);
    await shot('job-canceled');
  });

  it('shows why a job failed, with the message and in the attempts table', async () => {
    const job = await client.submit({ queue: 'ui', steps: [{ key: 'boom', run: 'echo working; sleep 1; exit 3' }] });
    // Opened while it runs: the reason arrives with the state change, not with a reload.
    await page.goto(`${server.url}/jobs/${job.id}`);
    await page.getByTestId('log').getByText('working').waitFor({ timeout: 20_000 });
    await expect.poll(() => page.getByTestId('job-state').textContent(), { timeout: 15_000 }).toBe('failed');
    const reason = page.getByTestId('failure-reason');
    await expect.poll(() => reason.textContent()).toBe('script failure (script_failure)');
    expect(await reason.getAttribute('title')).toBe('a step exited with a non-zero code');
    expect(await page.getByTestId('failure').textContent()).toContain('a step exited with a non-zero code');
    expect(await page.getByTestId('failure-message').textContent()).toBe('step boom failed with exit code 3');
    await expect
      .poll(() => page.getByTestId('attempt-reason').allTextContents())
      .toEqual(['script failure (script_failure)']);
    await shot('job-failed');
    // A retry clears the job's reason; the first attempt keeps its own.
    await page.getByTestId('retry').click();
    await expect.poll(() => page.getByTestId('failure-reason').count(), { timeout: 15_000 }).toBe(0);
    await expect
      .poll(() => page.getByTestId('attempt-reason').allTextContents(), { timeout: 15_000 })
      .toContain('script failure (script_failure)');
    await expect.poll(() => page.getByTestId('job-state').textContent(), { timeout: 15_000 }).toBe('failed');
  });

  it('lists the executors and flags one whose version does not match the server', async () => {
    await fakeHeartbeat();
    fakeBeat = setInterval(() => void fakeHeartbeat().catch(() => {}), 3000);
    const api = (await client.call('GET', '/executors')).body as {
      executors: { name: string; compatibility?: string | null }[];
    };
    expect(api.executors.find((e) => e.name === 'ui-future')?.compatibility).toBe('version_ahead');
    expect(api.executors.find((e) => e.name === 'ui-old')?.compatibility).toBe('outdated');
    await page.goto(`${server.url}/executors`);
    const real = page.locator('tr[data-executor="ui-exec"]');
    const future = page.locator('tr[data-executor="ui-future"]');
    await real.waitFor();
    await future.waitFor();
    expect(await real.textContent()).toContain('shell');
    expect(await real.textContent()).toContain('active');
    expect(await real.getByTestId('compat-warning').count()).toBe(0);
    expect(await future.getByTestId('compat-warning').textContent()).toMatch(/Version ahead: executor 1\.5\.0/);
    // Per-job limits: none from the shell runtime; CPU, memory and disk from a docker executor; no disk from an old one.
    expect(await real.getByTestId('job-limits').count()).toBe(0);
    expect(await future.getByTestId('job-limits').innerText()).toBe('2 CPUs\n4Gi memory\n20Gi disk');
    const old = page.locator('tr[data-executor="ui-old"]');
    await old.waitFor();
    expect(await old.getByTestId('compat-warning').textContent()).toMatch(/Outdated: executor 0\.0\.9 is behind/);
    expect(await old.getByTestId('job-limits').innerText()).toBe('1 CPU\n2Gi memory\ndisk not reported');
    await shot('executors');
  });

  it('tells a user who is not a site admin that executors are for site admins', async () => {
    const bob = await client.addUser('ui-bob');
    const other = await browser.newPage();
    await other.goto(`${server.url}/executors`);
    await other.getByLabel('API token').fill((bob as unknown as { token: string }).token);
    await other.getByRole('button', { name: 'Sign in' }).click();
    await other.getByText('Site admins only.').waitFor();
    await other.screenshot({ path: path.join(SHOTS, 'executors-not-admin.png') });
    await other.close();
  });

  it('renders a 100k-line log with only the visible rows in the DOM, and scrolls to the end', async () => {
    const job = await client.submit({ queue: 'ui', steps: [{ key: 'many', run: "seq 1 100000 | sed 's/^/row /'" }] });
    await client.waitForState(job.id, 'completed', 60_000);
    const started = Date.now();
    await page.goto(`${server.url}/jobs/${job.id}`);
    await expect.poll(() => page.getByTestId('line-count').textContent(), { timeout: 30_000 }).toBe('100,000 lines');
    const loadMs = Date.now() - started;
    const rows = await page.locator('.log-line').count();
    expect(rows).toBeGreaterThan(10);
    expect(rows).toBeLessThan(200);
    // It follows to the end on its own; scroll to the top and use the End button.
    await page.getByRole('button', { name: 'Top' }).click();
    await page.getByTestId('log').getByText('row 1', { exact: true }).waitFor();
    await page.getByTestId('log-end').click();
    await page.getByTestId('log').getByText('row 100000', { exact: true }).waitFor();
    expect(await page.locator('.log-line').count()).toBeLessThan(200);
    const scrolled = await page.getByTestId('log').evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
    expect(scrolled).toBeLessThan(2);
    await shot('job-100k');
    expect(loadMs).toBeLessThan(30_000);
  });

  it('ran without script errors or CSP violations', async () => {
    await sleep(100);
    expect(problems).toEqual([]);
  });
});
