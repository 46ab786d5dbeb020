// Pulling a step image from a real private registry (htpasswd auth) with each of the three credential sources,
// and proof of their precedence: a higher source wins even when a lower one holds different credentials.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobSpecInput } from '../../src/core/jobSpec.js';
import { TestClient } from '../support/api.js';
import { DOCKER_TEST_IMAGE, docker, imageExists, removeImage } from '../support/docker.js';
import { startExecutor, startServer, tempDir, type ExecutorHandle, type ServerHandle } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';

const USER = 'ci-bot';
const PASSWORD = 'correct-horse-battery-staple';
const WRONG = 'not-the-password';

let registry: RegistryHandle;
let server: ServerHandle;
let client: TestClient;
let image: string;
const executors: ExecutorHandle[] = [];

const auths = (password: string) => ({
  auths: { [registry.host]: { auth: Buffer.from(`${USER}:${password}`).toString('base64') } },
});

/** An executor whose own credentials (environment and ~/.docker/config.json) are as given. */
async function executorWith(queue: string, own: { env?: string; home?: string }): Promise<void> {
  const home = await tempDir(`registry-home-${queue}`);
  if (own.home) {
    await mkdir(path.join(home, '.docker'));
    await writeFile(path.join(home, '.docker', 'config.json'), JSON.stringify(auths(own.home)));
  }
  const env: NodeJS.ProcessEnv = { EXECUTOR_RUNTIME: 'docker', HOME: home, DOCKER_CONFIG: '' };
  if (own.env) env.EXECUTOR_DOCKER_AUTH_CONFIG = JSON.stringify(auths(own.env));
  const executor = await startExecutor(server.url, { name: `registry-${queue}`, queues: [queue], env });
  executors.push(executor);
}

/** Runs a one-step job from the private image, which the engine does not have, and returns the finished job. */
async function pull(queue: string, extra: Partial<JobSpecInput> = {}) {
  await removeImage(image);
  expect(await imageExists(image)).toBe(false);
  const job = await client.submit({
    queue,
    maxAttempts: 1,
    steps: [{ key: 'private', image, run: 'echo from the private image' }],
    ...extra,
  });
  const done = await client.waitFor(job.id, (j) => j.state === 'completed' || j.state === 'failed', 60_000);
  return { done, log: (await client.logs(job.id)).entries[0]?.out ?? '' };
}

beforeAll(async () => {
  registry = await startRegistry({ user: USER, password: PASSWORD });
  // An image with a layer of its own on top of the test image, so a pull has a layer to download.
  const source = `local/private-src:${process.pid}`;
  const container = (await docker(['create', DOCKER_TEST_IMAGE, 'true'])).stdout.trim();
  const dir = await tempDir('registry-layer');
  await writeFile(path.join(dir, 'marker'), `${Date.now()} ${Math.random()}\n`);
  await docker(['cp', path.join(dir, 'marker'), `${container}:/marker`]);
  await docker(['commit', container, source]);
  await docker(['rm', container]);
  image = await registry.push(source, 'team/private:1');
  await removeImage(source);
  server = await startServer({ name: 'registry-server' });
  client = new TestClient(server.url);
  await Promise.all([
    executorWith('wrong-below', { env: WRONG, home: WRONG }),
    executorWith('env-right', { env: PASSWORD, home: WRONG }),
    executorWith('home-right', { home: PASSWORD }),
  ]);
});

afterAll(async () => {
  await Promise.all(executors.map((e) => e.stop()));
  await server?.stop();
  await registry?.stop();
  if (image) await removeImage(image);
});

describe('private registry credentials', () => {
  it("pull with the job's DOCKER_AUTH_CONFIG first, over wrong ones in the executor's environment and config file", async () => {
    const { done, log } = await pull('wrong-below', { dockerAuthConfig: auths(PASSWORD) });
    expect(done.state).toBe('completed');
    expect(log).toContain(`[dockhand] pulling ${image} from ${registry.host} with the job's DOCKER_AUTH_CONFIG`);
    // Progress, one line per state of each layer the engine lacks (the image's own top layer), then the digest.
    expect(log).toMatch(/\[dockhand\] [0-9a-f]{12}: Already exists\n/);
    expect(log).toMatch(/\[dockhand\] [0-9a-f]{12}: Pulling fs layer\n/);
    expect(log).toMatch(/\[dockhand\] [0-9a-f]{12}: Pull complete\n/);
    // Progress ticks are not repeated: at most one "Downloading" line for the layer (none when the engine finished
    // the small layer before its first progress report, as it sometimes does on a busy machine).
    expect((log.match(/Downloading/g) ?? []).length).toBeLessThanOrEqual(1);
    expect(log).toMatch(/\[dockhand\] Digest: sha256:[0-9a-f]{64}\n/);
    expect(log).toContain('stdout: from the private image');
  });

  it("pull with the DOCKER_AUTH_CONFIG secret of the job's namespace, over credentials given with the job and the executor's", async () => {
    await client.addOrg('registry-team');
    await client.setSecret('DOCKER_AUTH_CONFIG', JSON.stringify(auths(PASSWORD)), 'org:registry-team');
    try {
      const { done, log } = await pull('wrong-below', {
        namespace: 'org:registry-team',
        dockerAuthConfig: auths(WRONG),
      });
      expect(done.state).toBe('completed');
      expect(log).toContain("with the job's DOCKER_AUTH_CONFIG");
      const access = (await client.call('GET', `/secrets/access-log?jobId=${done.id}`)).body.entries;
      expect(access).toEqual([
        expect.objectContaining({
          namespace: 'org:registry-team',
          name: 'DOCKER_AUTH_CONFIG',
          jobId: done.id,
          executorName: 'registry-wrong-below',
        }),
      ]);
    } finally {
      await client.call('DELETE', '/secrets/DOCKER_AUTH_CONFIG?namespace=org:registry-team');
    }
  });

  it('pull with EXECUTOR_DOCKER_AUTH_CONFIG over a wrong ~/.docker/config.json', async () => {
    const { done, log } = await pull('env-right');
    expect(done.state).toBe('completed');
    expect(log).toContain(`from ${registry.host} with EXECUTOR_DOCKER_AUTH_CONFIG`);
  });

  it("pull with the executor user's ~/.docker/config.json when nothing else has credentials", async () => {
    const { done, log } = await pull('home-right');
    expect(done.state).toBe('completed');
    expect(log).toMatch(/with \S+\/\.docker\/config\.json\n/);
  });

  it('use the higher source even when it is the wrong one: the job fails, saying access was refused, and is not retried', async () => {
    const { done, log } = await pull('env-right', { dockerAuthConfig: auths(WRONG), maxAttempts: 3 });
    expect(done.state).toBe('failed');
    expect(done.attempt).toBe(1);
    expect(done.failureMessage).toMatch(
      new RegExp(
        `^step private: could not run the step: cannot pull image ${image}: .*(unauthorized|authentication required)`,
      ),
    );
    expect(log).toContain("with the job's DOCKER_AUTH_CONFIG");
    const below = await pull('wrong-below');
    expect(below.done.state).toBe('failed');
    expect(below.log).toContain('with EXECUTOR_DOCKER_AUTH_CONFIG');
  });

  it('stop a pull that hangs when the job is canceled', async () => {
    await removeImage(image);
    registry.signal('SIGSTOP');
    try {
      const job = await client.submit({ queue: 'env-right', steps: [{ key: 'stuck', image, run: 'true' }] });
      await client.waitForState(job.id, 'processing');
      await new Promise((r) => setTimeout(r, 500)); // the pull is under way, waiting on the frozen registry
      expect((await client.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
      const done = await client.waitForState(job.id, 'canceled', 5_000);
      expect(done.finishedAt! - Date.now()).toBeLessThan(2_000);
    } finally {
      registry.signal('SIGCONT');
    }
  });

  it('share one pull between jobs, and let a job go on when the other one is canceled', async () => {
    await removeImage(image);
    registry.signal('SIGSTOP');
    let frozen = true;
    try {
      const spec = { queue: 'env-right', maxAttempts: 1, steps: [{ key: 'shared', image, run: 'echo got it' }] };
      const [a, b] = [await client.submit(spec), await client.submit(spec)];
      await client.waitForState(a.id, 'processing');
      await client.waitForState(b.id, 'processing');
      await new Promise((r) => setTimeout(r, 500)); // one pulls, the other waits for that pull
      await client.call('POST', `/jobs/${a.id}/cancel`);
      await client.waitForState(a.id, 'canceled', 5_000);
      expect((await client.job(b.id)).job.state).toBe('processing');
      registry.signal('SIGCONT');
      frozen = false;
      const done = await client.waitForState(b.id, 'completed', 30_000);
      expect(done.attempt).toBe(1);
      expect((await client.logs(b.id)).entries[0].out).toContain('stdout: got it');
    } finally {
      if (frozen) registry.signal('SIGCONT');
    }
  });

  it('fail a job whose image is not in the registry, without retrying it', async () => {
    const job = await client.submit({
      queue: 'env-right',
      maxAttempts: 3,
      steps: [{ key: 'missing', image: `${registry.host}/team/nothing-here:1`, run: 'true' }],
    });
    const done = await client.waitFor(
      job.id,
      (j) => j.state === 'failed' || (j.state === 'queued' && j.attempt > 0),
      30_000,
    );
    expect(done.state).toBe('failed');
    expect(done.failureMessage).toMatch(/cannot pull image .*nothing-here:1: .*(not found|manifest unknown)/);
  });

  it('never let a registry credential reach the job log or the executor log', async () => {
    for (const executor of executors) expect(executor.proc.output).not.toContain(PASSWORD);
    for (const { id } of (await client.call('GET', '/jobs?limit=100')).body.jobs) {
      const { body } = await client.call('GET', `/jobs/${id}`);
      expect(JSON.stringify(body)).not.toContain(Buffer.from(`${USER}:${PASSWORD}`).toString('base64'));
      expect(JSON.stringify(await client.logs(id))).not.toContain(PASSWORD);
    }
  });
});
