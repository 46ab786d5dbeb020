// The web UI's Builds pages in a real browser (Debian's chromium, driven by playwright-core) against a real server
// whose build manager starts real workers on the process plane (buildah on this host), pushing to a real registry on
// loopback: the list, a build's phases appearing live through `complete` with buildah's log and the digest, and a
// build cancelled from its page while it builds. Screenshots go to test-output/ui/.
import { mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { getBuild, submitUpload } from '../support/builds.js';
import { openBrowser } from '../support/browser.js';
import { DOCKER_TEST_IMAGE, ensureTestImages } from '../support/docker.js';
import { ADMIN_TOKEN, OUTPUT_DIR, startServer, tempDir, type ServerHandle } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { until } from '../support/wait.js';

const SHOTS = path.join(OUTPUT_DIR, 'ui');
const REGISTRY_USER = 'builder';
const REGISTRY_PASSWORD = 'builds-ui-test-password';
const CONFIG = `builds:
  HEARTBEAT_TIMEOUT: 10
  RETRY_AFTER: 1
  EXECUTORS:
    - EXECUTOR: process
      NAME: local
      SETUP_TIME: 30
`;

let server: ServerHandle;
let registry: RegistryHandle;
let client: TestClient;
let browser: Browser;
let page: Page;
let base: string;
const problems: string[] = [];

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Uploads the Dockerfile as a context and submits a build of it that pushes `tag`; returns the build's id. */
async function submitBuild(dockerfile: string, tag: string): Promise<number> {
  return (await submitUpload(client, { Dockerfile: dockerfile }, { tags: [tag] })).id;
}

/** The server's output, for a failure's message. */
async function serverTail(): Promise<string> {
  return (await server.proc.outputSoFar()).slice(-3000);
}

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  await ensureTestImages();
  registry = await startRegistry({ user: REGISTRY_USER, password: REGISTRY_PASSWORD });
  base = await registry.push(DOCKER_TEST_IMAGE, 'base/busybox:1');
  const dataDir = await tempDir('builds-ui');
  const config = path.join(dataDir, 'dockhand.yaml');
  await writeFile(config, CONFIG);
  server = await startServer({ name: 'builds-ui-server', dataDir, args: ['--config', config] });
  client = new TestClient(server.url);
  // The workers log in to the registry with the build's namespace's DOCKER_AUTH_CONFIG (admin builds in user:admin).
  const auth = Buffer.from(`${REGISTRY_USER}:${REGISTRY_PASSWORD}`).toString('base64');
  await client.setSecret('DOCKER_AUTH_CONFIG', JSON.stringify({ auths: { [registry.host]: { auth } } }), 'user:admin');
  ({ browser, page } = await openBrowser(problems));
  // Signed in once: the token is kept for the tab.
  await page.goto(`${server.url}/builds`);
  await page.getByLabel('API token').fill(ADMIN_TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('user').waitFor();
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await registry?.stop();
});

describe('web UI: builds', () => {
  let first: number;
  let tag: string;

  it('shows a build live on its page: the phases through complete, the log with buildah, the digest', async () => {
    tag = `${registry.host}/team/app:1`;
    first = await submitBuild(`FROM ${base}\nRUN echo hi > /x\n`, tag);
    await page.goto(`${server.url}/builds/${first}`);
    const timeline = page.getByTestId('timeline');
    await timeline.waitFor();
    // Watched while it runs: the current phase moves along as the worker reports it.
    const seen = new Set<string>();
    await until(
      `the page shows build ${first} complete`,
      async () => {
        const current = await timeline.locator('li[data-current]').getAttribute('data-phase', { timeout: 1_000 });
        if (current) seen.add(current);
        return current === 'complete' || current === 'error' || current === 'internalerror';
      },
      120_000,
      50,
    ).catch(async (err: Error) => {
      throw new Error(`${err.message}; phases seen: ${[...seen].join(', ')}\n${await serverTail()}`);
    });
    const answer = await getBuild(client, first);
    expect(answer.build.phase, JSON.stringify(answer)).toBe('complete');
    // Some phase before the end was current on the page, not only the final one (it followed the build live).
    expect([...seen].filter((p) => p !== 'complete').length).toBeGreaterThan(0);

    expect(
      await timeline.locator('li:not([data-pending])').evaluateAll((els) => els.map((e) => e.dataset.phase)),
    ).toEqual(['waiting', 'build-scheduled', 'unpacking', 'pulling', 'building', 'pushing', 'complete']);
    // Each phase has its time and (but the last) how long it lasted.
    const spent = await timeline.getByTestId('phase-spent').allTextContents();
    for (const s of spent.slice(0, -1)) expect(s).toMatch(/^[\d.]+ (ms|s)$|^\d+ min \d+ s$/);
    expect(spent[spent.length - 1]).toBe('final');
    await expect.poll(() => page.getByTestId('build-phase').textContent()).toBe('complete');

    const log = page.getByTestId('log');
    await log
      .locator('.log-line', { hasText: /STEP \d+\/\d+: RUN echo hi/ })
      .first()
      .waitFor();
    // The worker's output apart from the phase changes and the server's notes.
    expect(await log.locator('.log-line:not(.note)', { hasText: 'STEP' }).count()).toBeGreaterThan(0);
    expect(await log.locator('.log-line.phase', { hasText: 'phase building' }).count()).toBe(1);
    expect(await log.locator('.log-line.system', { hasText: 'started on plane local' }).count()).toBe(1);
    await expect.poll(() => page.getByTestId('stream-status').textContent()).toBe('complete');

    expect(answer.build.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await page.getByTestId('digest').textContent()).toBe(answer.build.digest);
    expect(await page.getByTestId('build-tags').textContent()).toBe(tag);
    expect(await page.getByTestId('build-context').textContent()).toBe('uploaded context');
    expect(await page.getByTestId('build-dockerfile').textContent()).toBe('Dockerfile');
    await expect.poll(() => page.getByTestId('try-outcome').allTextContents()).toEqual(['complete']);
    expect(await page.locator('tr[data-try="1"]').textContent()).toContain('local');
    expect(await page.getByTestId('cancel').isDisabled()).toBe(true);
    await shot('build-complete');
  });

  it('lists the build with its phase, tag, plane and tries', async () => {
    await page.goto(`${server.url}/builds`);
    const row = page.locator(`tr[data-build="${first}"]`);
    await row.waitFor();
    expect(await row.getByTestId('build-phase').textContent()).toBe('complete');
    expect(await row.getByTestId('build-tag').textContent()).toBe(tag);
    const cells = await row.locator('td').allTextContents();
    expect(cells[0]).toBe(`#${first}`);
    expect(cells[4]).toBe('local');
    expect(cells[5]).toBe('1');
    expect(cells[7]).toBe('user:admin');
    await shot('builds');
    await row.getByRole('link', { name: `#${first}` }).click();
    await expect.poll(() => new URL(page.url()).pathname).toBe(`/builds/${first}`);
    await page.getByTestId('digest').waitFor();
  });

  it('cancels a build from its page while it builds', async () => {
    const id = await submitBuild(`FROM ${base}\nRUN echo sleeping && sleep 60\n`, `${registry.host}/team/slow:1`);
    await page.goto(`${server.url}/builds/${id}`);
    const log = page.getByTestId('log');
    await log
      .locator('.log-line:not(.note)', { hasText: 'sleeping' })
      .first()
      .waitFor({ timeout: 120_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}\n${JSON.stringify(await getBuild(client, id))}\n${await serverTail()}`);
      });
    await expect.poll(() => page.getByTestId('build-phase').textContent()).toBe('building');
    await expect.poll(() => page.getByTestId('cancel').isEnabled()).toBe(true);
    await shot('build-building');
    await page.getByTestId('cancel').click();
    await expect.poll(() => page.getByTestId('build-phase').textContent(), { timeout: 15_000 }).toBe('cancelled');
    await expect.poll(() => page.getByTestId('stream-status').textContent()).toBe('complete');
    expect(await page.getByTestId('cancel').isDisabled()).toBe(true);
    expect(await page.locator('[role=alert]').count()).toBe(0);
    await expect
      .poll(() => page.getByTestId('timeline').locator('li[data-current]').getAttribute('data-phase'))
      .toBe('cancelled');
    await expect.poll(() => log.locator('.log-line.system', { hasText: 'cancelled by admin' }).count()).toBe(1);
    await expect.poll(() => page.getByTestId('try-outcome').allTextContents()).toEqual(['cancelled']);
    const answer = await getBuild(client, id);
    expect(answer.build.phase).toBe('cancelled');
    expect(answer.tries.map((t) => t.outcome)).toEqual(['cancelled']);
    await shot('build-cancelled');
  });

  it('ran without script errors or CSP violations', () => {
    expect(problems).toEqual([]);
  });
});
