// The build manager end to end on the process and command planes: real server processes with a config file, real
// workers running Debian's buildah, a real registry with htpasswd auth, a real git server. (The container planes,
// docker and kubernetes, are in containerPlanes.test.ts, and every plane's contract in planes.test.ts.)
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  authConfig,
  buildLog,
  getBuild,
  registryDigest,
  startBuildServer,
  submitUpload,
  waitForBuild,
  type BuildServer,
} from '../support/builds.js';
import { DOCKER_TEST_IMAGE, docker } from '../support/docker.js';
import { startGitServer, type GitServer } from '../support/gitServer.js';
import { ADMIN_TOKEN, CLI, runCli, tempDir } from '../support/processes.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';
import { until } from '../support/wait.js';

const USER = 'builder';
const PASSWORD = 'registry-password-7f3a9c2e';

let registry: RegistryHandle;
let git: GitServer;
let base: string;

beforeAll(async () => {
  registry = await startRegistry({ user: USER, password: PASSWORD });
  base = await registry.push(DOCKER_TEST_IMAGE, 'base/busybox:1');
  git = await startGitServer();
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  await git?.close();
});

async function withAuth(s: BuildServer): Promise<void> {
  await s.admin.setSecret('DOCKER_AUTH_CONFIG', authConfig(registry.host, USER, PASSWORD), 'user:admin');
}

/** Runs an image from the registry with a login of its own; returns its output. */
async function runImage(ref: string): Promise<string> {
  const config = await tempDir('docker-client');
  await docker(['--config', config, 'login', '--username', USER, '--password-stdin', registry.host], {
    input: PASSWORD,
  });
  try {
    return (await docker(['--config', config, 'run', '--rm', '--network', 'none', ref])).stdout;
  } finally {
    await docker(['rmi', '-f', ref]).catch(() => undefined);
  }
}

describe('on the process plane', () => {
  let s: BuildServer;

  beforeAll(async () => {
    s = await startBuildServer({
      ALLOWED_WORKER_COUNT: 1,
      HEARTBEAT_TIMEOUT: 5,
      RETRY_AFTER: 0,
      MAXIMUM_CONTEXT_SIZE: '1Mi',
      EXECUTORS: [{ EXECUTOR: 'process', NAME: 'local', SETUP_TIME: 30 }],
    });
    await withAuth(s);
  });
  afterAll(async () => s?.stop());

  it('builds a multi-stage Dockerfile from a git commit, pushes every tag at the digest the registry reports, and the image runs', async () => {
    const [, commit] = git.makeRepo('app', [
      { 'hello.txt': 'old\n', Dockerfile: `FROM ${base}\n` },
      {
        'hello.txt': 'hello from git\n',
        Dockerfile: [
          `FROM ${base} AS build`,
          'RUN echo compiled > /artifact',
          `FROM ${base}`,
          'COPY --from=build /artifact /artifact',
          'COPY hello.txt /hello.txt',
          'CMD ["cat", "/artifact", "/hello.txt"]',
        ].join('\n'),
      },
    ]);
    const env = { DOCKHAND_URL: s.server.url, DOCKHAND_TOKEN: ADMIN_TOKEN };
    const cli = await runCli(
      [
        'build',
        'submit',
        '--context',
        `${git.url('app')}@${commit}`,
        '--tag',
        `${registry.host}/team/app:${commit}`,
        '--tag',
        `${registry.host}/team/app:latest`,
        '--follow',
        '--json',
      ],
      env,
    );
    expect(cli.code, cli.stderr).toBe(0);
    const record = JSON.parse(cli.stdout.trim().split('\n').pop()!) as {
      build: { id: number; digest: string; phase: string; commit: string };
    };
    expect(record.build.phase).toBe('complete');
    expect(record.build.commit).toBe(commit);
    const digest = await registryDigest(registry.host, 'team/app', commit, USER, PASSWORD);
    expect(record.build.digest).toBe(digest);
    expect(await registryDigest(registry.host, 'team/app', 'latest', USER, PASSWORD)).toBe(digest);
    expect(await runImage(`${registry.host}/team/app:${commit}`)).toBe('compiled\nhello from git\n');

    // Every phase, in Quay's order, timestamped.
    const { build } = await getBuild(s.admin, record.build.id);
    expect(build.phases.map((p) => p.phase)).toEqual([
      'waiting',
      'build-scheduled',
      'unpacking',
      'pulling',
      'building',
      'pushing',
      'complete',
    ]);
    const times = build.phases.map((p) => p.at);
    expect([...times].sort((a, b) => a - b)).toEqual(times);

    // The image-pushed event, per tag, for the rollout watcher.
    const events = await s.admin.call<{ events: Record<string, unknown>[] }>(
      'GET',
      `/events/image-pushed?image=${registry.host}/team/app`,
    );
    expect(events.body.events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          image: `${registry.host}/team/app`,
          tag: commit,
          digest,
          repository: git.url('app'),
          commit,
        }),
        expect.objectContaining({ tag: 'latest', digest }),
      ]),
    );
    // An archived build never changes phase again: cancel is refused.
    expect((await s.admin.call('POST', `/builds/${build.id}/cancel`)).status).toBe(409);
  });

  it('a failing RUN ends in error, final, with its output in the log; the CLI exits 1', async () => {
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\nRUN echo about to fail && exit 7\n` },
      { tags: [`${registry.host}/team/broken:1`] },
    );
    const cli = await runCli(['build', 'logs', String(build.id), '--follow'], {
      DOCKHAND_URL: s.server.url,
      DOCKHAND_TOKEN: ADMIN_TOKEN,
    });
    expect(cli.code).toBe(1);
    const done = await waitForBuild(s.admin, build.id);
    expect(done.phase).toBe('error');
    expect(done.tries).toBe(1);
    expect(done.message).toMatch(/the build failed/);
    const log = await buildLog(s.admin, build.id);
    expect(log).toContain('about to fail');
    expect(cli.stdout).toContain('about to fail');
  });

  it('masks secrets in the build log, as they are and base64-encoded', async () => {
    await s.admin.setSecret('REGISTRY_PASSWORD', PASSWORD);
    const build = await submitUpload(
      s.admin,
      {
        Dockerfile: [
          `FROM ${base}`,
          'RUN --mount=type=secret,id=REGISTRY_PASSWORD cat /run/secrets/REGISTRY_PASSWORD; echo; base64 /run/secrets/REGISTRY_PASSWORD',
          `RUN echo ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`,
        ].join('\n'),
      },
      { tags: [`${registry.host}/team/secretive:1`], secrets: ['REGISTRY_PASSWORD'] },
    );
    const done = await waitForBuild(s.admin, build.id);
    expect(done.phase, done.message ?? '').toBe('complete');
    const log = await buildLog(s.admin, build.id);
    expect(log).toContain('[REGISTRY_PASSWORD]');
    expect(log).not.toContain(PASSWORD);
    expect(log).not.toContain(Buffer.from(PASSWORD).toString('base64').slice(0, 20));
    expect(log).not.toContain(Buffer.from(`${USER}:${PASSWORD}`).toString('base64'));
  });

  it('with ALLOWED_WORKER_COUNT 1, three queued builds run one at a time, in order', async () => {
    const builds = [];
    for (const name of ['one', 'two', 'three'])
      builds.push(
        await submitUpload(
          s.admin,
          { Dockerfile: `FROM ${base}\nRUN echo ${name}\n` },
          { tags: [`${registry.host}/team/${name}:1`] },
        ),
      );
    for (const b of builds) expect((await waitForBuild(s.admin, b.id)).phase).toBe('complete');
    const tries = await Promise.all(builds.map(async (b) => (await getBuild(s.admin, b.id)).tries[0]));
    for (let i = 1; i < tries.length; i++) expect(tries[i].startedAt).toBeGreaterThanOrEqual(tries[i - 1].endedAt!);
  });

  it('two builds of one repository never overlap, and a cancel in building stops the worker', async () => {
    const slow = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\nRUN echo started-slow && sleep 300\n` },
      { tags: [`${registry.host}/team/same:slow`] },
    );
    const next = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\nRUN echo next\n` },
      { tags: [`${registry.host}/team/same:next`] },
    );
    await waitForBuild(s.admin, slow.id, ['building']);
    await until('the slow build prints', async () => (await buildLog(s.admin, slow.id)).includes('started-slow'));
    expect((await getBuild(s.admin, next.id)).build.phase).toBe('waiting');
    const workersBefore = workerProcesses();
    expect(workersBefore.length).toBeGreaterThan(0);

    const cancelled = await s.admin.call<{ build: { phase: string } }>('POST', `/builds/${slow.id}/cancel`);
    expect(cancelled.status).toBe(200);
    expect(cancelled.body.build.phase).toBe('cancelled');
    await until("the cancelled build's worker and its buildah are gone", () =>
      workersBefore.every((pid) => !existsSync(`/proc/${pid}`)),
    );
    expect((await waitForBuild(s.admin, next.id)).phase).toBe('complete');
    const [slowTry] = (await getBuild(s.admin, slow.id)).tries;
    const [nextTry] = (await getBuild(s.admin, next.id)).tries;
    expect(nextTry.startedAt).toBeGreaterThanOrEqual(slowTry.endedAt!);
    expect((await getBuild(s.admin, slow.id)).build.phase).toBe('cancelled');
  });

  it("never lends a global registry login to a namespace's build for its own registry", async () => {
    // Global holds a login for the registry (site-wide, for pulls); bob's namespace holds none.
    await s.admin.setSecret('DOCKER_AUTH_CONFIG', authConfig(registry.host, USER, PASSWORD), 'global');
    const bob = await s.admin.addUser('bob');
    const build = await submitUpload(
      bob,
      { Dockerfile: `FROM ${base}\nRUN echo bob\n` },
      { tags: [`${registry.host}/team/app:bob`] },
      bob.token,
    );
    const done = await waitForBuild(s.admin, build.id);
    expect(done.phase).toBe('error');
    expect(done.message).toMatch(/unauthorized|authentication required/i);
    const log = await buildLog(s.admin, build.id);
    expect(log).not.toContain('secrets given to the worker: DOCKER_AUTH_CONFIG');
  });

  it('refuses bad input with the field named, and loses nothing', async () => {
    const bad = await s.admin.call('POST', '/builds', {
      context: { git: { url: 'ext::sh -c x', commit: 'abc' } },
      tags: ['app:1'],
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(bad.body)).toMatch(/context|tags/);
    const twoRepos = await s.admin.call('POST', '/builds', {
      context: { git: { url: git.url('app'), commit: 'abcdef1' } },
      tags: [`${registry.host}/a/b:1`, `${registry.host}/c/d:1`],
    });
    expect(twoRepos.status).toBe(400);
    expect(JSON.stringify(twoRepos.body)).toContain('one repository');
    const notGzip = await fetch(`${s.server.url}/api/v1/builds/contexts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/gzip' },
      body: 'not a tarball',
    });
    expect(notGzip.status).toBe(400);
    const tooLarge = await fetch(`${s.server.url}/api/v1/builds/contexts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/gzip' },
      body: new Uint8Array(2 * 1024 * 1024).fill(0x1f),
    });
    expect(tooLarge.status).toBe(413);
    expect(await tooLarge.text()).toContain('MAXIMUM_CONTEXT_SIZE');
  });
});

/** Process ids of running build workers (any `dockhand build-worker`) and the buildah they run. */
function workerProcesses(): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes('build-worker') || /(^|\/)buildah /.test(cmd)) out.push(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('on operator-script (command) planes, in fallback order', () => {
  let s: BuildServer;
  let dir: string;

  beforeAll(async () => {
    dir = await tempDir('command-plane');
    mkdirSync(path.join(dir, 'state'));
    // Starts a real worker with the token from stdin, keeping what the test needs: the token (to replay it), the
    // worker's process group (to kill it), by build and try.
    const start = path.join(dir, 'start.sh');
    writeFileSync(
      start,
      [
        '#!/bin/sh',
        'set -e',
        `S=${dir}/state`,
        'token=$(cat)',
        'printf %s "$token" > "$S/token-$DOCKHAND_BUILD_ID-$DOCKHAND_BUILD_TRY"',
        `printf %s "$token" | setsid ${process.execPath} ${CLI} build-worker --server "$DOCKHAND_SERVER_URL" > "$S/worker-$DOCKHAND_EXECUTION_ID.log" 2>&1 &`,
        'echo $! > "$S/pid-$DOCKHAND_EXECUTION_ID"',
        'echo $! > "$S/pid-$DOCKHAND_BUILD_ID-$DOCKHAND_BUILD_TRY"',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const stop = path.join(dir, 'stop.sh');
    writeFileSync(
      stop,
      [
        '#!/bin/sh',
        `f=${dir}/state/pid-$DOCKHAND_EXECUTION_ID`,
        '[ -f "$f" ] && kill -KILL -"$(cat "$f")" 2>/dev/null',
        'exit 0',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    s = await startBuildServer({
      ALLOWED_WORKER_COUNT: 2,
      HEARTBEAT_TIMEOUT: 3,
      RETRY_AFTER: 0,
      EXECUTORS: [
        {
          EXECUTOR: 'command',
          NAME: 'broken',
          START_COMMAND: 'echo "cloud quota exceeded" >&2; exit 1',
          STOP_COMMAND: 'true',
        },
        { EXECUTOR: 'command', NAME: 'scripted', SETUP_TIME: 30, START_COMMAND: start, STOP_COMMAND: stop },
      ],
    });
    await withAuth(s);
  });
  afterAll(async () => s?.stop());

  it('falls back from a plane that cannot start a worker, logs it and counts it; a used registration token is refused', async () => {
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\nRUN echo fell-back\n` },
      { tags: [`${registry.host}/team/fallback:1`] },
    );
    const done = await waitForBuild(s.admin, build.id);
    expect(done.phase, done.message ?? '').toBe('complete');
    expect(done.plane).toBe('scripted');
    const log = await buildLog(s.admin, build.id);
    expect(log).toContain(
      'plane broken could not start a worker: START_COMMAND exited 1: cloud quota exceeded; falling back to plane scripted',
    );
    const metrics = await (await fetch(`${s.server.url}/metrics`)).text();
    expect(metrics).toMatch(/dockhand_build_fallbacks_total\{plane="broken",reason="start_failed"\} [1-9]/);
    expect(metrics).toMatch(/dockhand_builds_finished_total\{outcome="complete",plane="scripted"\} [1-9]/);

    // The token went to the worker on stdin only: never into the build's log. Replayed, it is refused.
    const token = readFileSync(path.join(dir, 'state', `token-${build.id}-1`), 'utf8');
    expect(token.split('.')).toHaveLength(3);
    expect(log).not.toContain(token);
    const replay = await fetch(`${s.server.url}/api/build-worker/v1/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ registrationToken: token }),
    });
    expect(replay.status).toBe(401);
    expect(await replay.text()).toMatch(/already used|has ended/);
    const forged = await fetch(`${s.server.url}/api/build-worker/v1/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ registrationToken: `${token.slice(0, -4)}AAAA` }),
    });
    expect(forged.status).toBe(401);
  });

  it('a worker killed mid-build expires (no heartbeat) and the build is retried on a fresh worker', async () => {
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\nRUN echo step-one && sleep 4\n` },
      { tags: [`${registry.host}/team/killed:1`] },
    );
    await waitForBuild(s.admin, build.id, ['building']);
    const pid = Number(readFileSync(path.join(dir, 'state', `pid-${build.id}-1`), 'utf8'));
    process.kill(-pid, 'SIGKILL');
    const done = await waitForBuild(s.admin, build.id);
    expect(done.phase, done.message ?? '').toBe('complete');
    const { tries } = await getBuild(s.admin, build.id);
    expect(tries.map((t) => t.outcome)).toEqual(['expired', 'complete']);
    expect(tries[0].message).toMatch(/no heartbeat/);
    expect(tries[1].executionId).not.toBe(tries[0].executionId);
    // An expired worker spends its try.
    expect(done.triesRemaining).toBe(1);
    // The expired try is fenced off: its registration cannot be used again to rejoin.
    const late = await fetch(`${s.server.url}/api/build-worker/v1/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ registrationToken: readFileSync(path.join(dir, 'state', `token-${build.id}-1`), 'utf8') }),
    });
    expect(late.status).toBe(401);
  });
  it('keeps a plane with MINIMUM_RETRY_THRESHOLD for the tries it allows, then falls through to the next plane', async () => {
    const t = await startBuildServer({
      RETRY_AFTER: 0,
      EXECUTORS: [
        // Never registers; allowed only while the build has 2 or more tries left after the claim.
        {
          EXECUTOR: 'command',
          NAME: 'picky',
          SETUP_TIME: 1,
          MINIMUM_RETRY_THRESHOLD: 2,
          START_COMMAND: 'cat > /dev/null',
          STOP_COMMAND: 'true',
        },
        {
          EXECUTOR: 'command',
          NAME: 'scripted',
          SETUP_TIME: 30,
          START_COMMAND: path.join(dir, 'start.sh'),
          STOP_COMMAND: path.join(dir, 'stop.sh'),
        },
      ],
    });
    try {
      await t.admin.setSecret('DOCKER_AUTH_CONFIG', authConfig(registry.host, USER, PASSWORD), 'user:admin');
      const build = await submitUpload(
        t.admin,
        { Dockerfile: `FROM ${base}\n` },
        { tags: [`${registry.host}/team/picky:1`] },
      );
      const done = await waitForBuild(t.admin, build.id);
      expect(done.phase, done.message ?? '').toBe('complete');
      const { tries } = await getBuild(t.admin, build.id);
      // Try 1 (2 left): picky, which never registers; try 2 (1 left): picky is skipped, scripted builds it.
      expect(tries.map((x) => [x.plane, x.outcome])).toEqual([
        ['picky', 'expired'],
        ['scripted', 'complete'],
      ]);
      expect(await buildLog(t.admin, build.id)).toContain(
        'plane picky skipped: it needs 2 tries left after this one, the build has 1',
      );
    } finally {
      await t.stop();
    }
  });
});

describe('a plane whose worker never registers', () => {
  let s: BuildServer;

  beforeAll(async () => {
    s = await startBuildServer({
      RETRY_AFTER: 0,
      EXECUTORS: [
        { EXECUTOR: 'command', NAME: 'silent', SETUP_TIME: 1, START_COMMAND: 'cat > /dev/null', STOP_COMMAND: 'true' },
      ],
    });
  });
  afterAll(async () => s?.stop());

  it('expires each try after SETUP_TIME and ends in internalerror once the three tries are spent; the CLI exits 3', async () => {
    const build = await submitUpload(
      s.admin,
      { Dockerfile: `FROM ${base}\n` },
      { tags: [`${registry.host}/team/never:1`] },
    );
    const cli = await runCli(['build', 'logs', String(build.id), '--follow'], {
      DOCKHAND_URL: s.server.url,
      DOCKHAND_TOKEN: ADMIN_TOKEN,
    });
    expect(cli.code).toBe(3);
    const { build: done, tries } = await getBuild(s.admin, build.id);
    expect(done.phase).toBe('internalerror');
    expect(done.final).toBe(true);
    expect(tries.map((t) => t.outcome)).toEqual(['expired', 'expired', 'expired']);
    expect(tries[0].message).toMatch(/did not register within plane silent's SETUP_TIME/);
    expect(done.phases.map((p) => p.phase)).toContain('internalerror');
  });
});
