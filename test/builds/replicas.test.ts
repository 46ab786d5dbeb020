// The build manager on two server replicas sharing PostgreSQL: one scheduler at a time (a lease), workers whose calls
// a balancer spreads over both replicas (a token signed by one is honoured by the other), every build claimed once,
// and the scheduling carried on by the other replica when the lease holder is killed.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { authConfig, getBuild, submitUpload, waitForBuild } from '../support/builds.js';
import { DOCKER_TEST_IMAGE } from '../support/docker.js';
import { freePort } from '../support/ports.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { ADMIN_TOKEN, startServer, tempDir, type ServerHandle } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { startBalancer, type TcpBalancer } from '../support/tcpBalancer.js';

const USER = 'builder';
const PASSWORD = 'replica-registry-password';

let database: TestDatabase;
let registry: RegistryHandle;
let balancer: TcpBalancer;
let replicas: ServerHandle[] = [];
let base: string;

beforeAll(async () => {
  database = await createTestDatabase('build-replicas');
  registry = await startRegistry({ user: USER, password: PASSWORD });
  base = await registry.push(DOCKER_TEST_IMAGE, 'base/busybox:1');
  const ports = [await freePort(), await freePort()];
  balancer = await startBalancer(ports.map((port) => ({ host: '127.0.0.1', port })));
  const dir = await tempDir('build-replicas');
  const config = path.join(dir, 'dockhand.yaml');
  writeFileSync(
    config,
    YAML.stringify({
      builds: {
        ALLOWED_WORKER_COUNT: 2,
        RETRY_AFTER: 0,
        // Workers reach "the server" through the balancer, so their calls land on either replica.
        EXECUTORS: [{ EXECUTOR: 'process', NAME: 'local', SETUP_TIME: 30, SERVER_URL: balancer.url }],
      },
    }),
  );
  const env = { DOCKHAND_DATABASE_URL: database.url, DOCKHAND_ENCRYPTION_KEY: randomBytes(32).toString('base64') };
  replicas = await Promise.all(
    ports.map((port, i) => startServer({ name: `build-replica-${i}`, port, env, args: ['--config', config] })),
  );
  await new TestClient(replicas[0].url).setSecret(
    'DOCKER_AUTH_CONFIG',
    authConfig(registry.host, USER, PASSWORD),
    'user:admin',
  );
}, 120_000);

afterAll(async () => {
  await Promise.all(replicas.map((r) => r.stop()));
  await balancer?.close();
  await registry?.stop();
  await database?.drop();
});

describe('builds on two replicas', () => {
  it('claim each build once, keep a repository to one build at a time, and take workers calls on either replica', async () => {
    const clients = replicas.map((r) => new TestClient(r.url, ADMIN_TOKEN));
    const builds = [];
    for (const [i, repo] of ['same', 'same', 'other', 'third'].entries())
      builds.push(
        await submitUpload(
          clients[i % 2],
          { Dockerfile: `FROM ${base}\nRUN echo build-${i}\n` },
          { tags: [`${registry.host}/team/${repo}:${i}`] },
        ),
      );
    for (const b of builds) expect((await waitForBuild(clients[0], b.id)).phase).toBe('complete');
    const tries = await Promise.all(builds.map(async (b) => (await getBuild(clients[1], b.id)).tries));
    // One worker each: no replica claimed a build another had.
    expect(tries.map((t) => t.length)).toEqual([1, 1, 1, 1]);
    // The two builds of one repository did not overlap.
    const [first, second] = [tries[0][0], tries[1][0]];
    expect(second.startedAt).toBeGreaterThanOrEqual(first.endedAt!);
    // Workers' connections went to both replicas.
    expect(balancer.forwarded.every((n) => n > 0)).toBe(true);
  });

  it('go on scheduling on the other replica when the lease holder is killed (its lease runs out)', async () => {
    const leader = replicas.findIndex((r) => r.proc.output.includes('this replica now schedules builds'));
    expect(leader).toBeGreaterThanOrEqual(0);
    expect(replicas.filter((r) => r.proc.output.includes('this replica now schedules builds'))).toHaveLength(1);
    const other = replicas[1 - leader];
    await replicas[leader].stop();
    const survivor = new TestClient(other.url, ADMIN_TOKEN);
    const build = await submitUpload(
      survivor,
      { Dockerfile: `FROM ${base}\nRUN echo after\n` },
      { tags: [`${registry.host}/team/after:1`] },
    );
    expect((await waitForBuild(survivor, build.id)).phase).toBe('complete');
    expect(other.proc.output).toContain('this replica now schedules builds');
  });
});
