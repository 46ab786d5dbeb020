// The `dockhand` command as a user runs it: up, server, executor, job and executors commands.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_TEST_IMAGE } from '../support/docker.js';
import {
  ADMIN_TOKEN,
  CLI,
  EXECUTORS_TOKEN,
  Proc,
  startExecutor,
  startServer,
  tempDir,
  type ExecutorHandle,
  type ServerHandle,
  runCli,
  type CliResult,
} from '../support/processes.js';
import { freePort } from '../support/ports.js';

describe('dockhand CLI against a server', () => {
  let server: ServerHandle;
  let executor: ExecutorHandle;
  let env: NodeJS.ProcessEnv;
  let dir: string;

  beforeAll(async () => {
    dir = await tempDir('cli');
    server = await startServer({ name: 'cli-server' });
    executor = await startExecutor(server.url, { name: 'cli-exec', queues: ['default', 'other'] });
    env = { DOCKHAND_URL: server.url, DOCKHAND_TOKEN: ADMIN_TOKEN, HOME: dir };
  });

  afterAll(async () => {
    await executor?.stop();
    await server?.stop();
  });

  it('lists its commands in --help', async () => {
    const { code, stdout } = await runCli(['--help']);
    expect(code).toBe(0);
    for (const command of ['server', 'executor', 'up', 'job', 'executors']) expect(stdout).toContain(command);
    const job = await runCli(['job', '--help']);
    for (const command of ['submit', 'list', 'show', 'logs', 'cancel', 'retry']) expect(job.stdout).toContain(command);
  });

  it('submits with --follow: logs stream live and the exit code tells the outcome', async () => {
    const gate = path.join(dir, 'gate');
    const spec = path.join(dir, 'gated.yaml');
    writeFileSync(
      spec,
      `queue: default\nsteps:\n  - key: wait\n    run: |\n      echo first\n      while [ ! -f ${gate} ]; do sleep 0.05; done\n      echo second\n`,
    );
    const follow = new Proc(['job', 'submit', spec, '--follow'], env, 'cli-follow');
    await follow.waitFor(/first/);
    expect(follow.output).not.toContain('second');
    writeFileSync(gate, '');
    expect(await follow.exit()).toBe(0);
    expect(follow.output).toMatch(/first\n(.|\n)*second\n/);
    expect(follow.output).toMatch(/<== step\.wait: exit 0/);
    expect(follow.output).toMatch(/job \d+ is running on cli-exec \(attempt 1\)/);

    // Nobody serves this queue: --follow says what it waits for, and a cancel ends it with exit code 2.
    const lonely = path.join(dir, 'lonely.yaml');
    writeFileSync(lonely, 'queue: nobody-here\nsteps:\n  - run: "true"\n');
    const waiting = new Proc(['job', 'submit', lonely, '--follow'], env, 'cli-follow-queued');
    const [, id] = await waiting.waitFor(/job (\d+) is queued on "nobody-here", waiting for an executor/);
    expect((await runCli(['job', 'cancel', id], env)).code).toBe(0);
    expect(await waiting.exit()).toBe(2);

    const hello = await runCli(['job', 'submit', 'examples/hello.yaml', '--follow'], env);
    expect(hello.code).toBe(0);
    expect(hello.stdout).toContain('Hello from Dockhand\n');
    expect(hello.stdout).toContain('working... 5/5\n');
    expect(hello.stdout).toContain('step 2 reads what step 1 wrote: done\n');

    const failing = path.join(dir, 'failing.yaml');
    writeFileSync(failing, 'queue: default\nsteps:\n  - run: echo oops >&2; exit 7\n');
    const failed = await runCli(['job', 'submit', failing, '--follow'], env);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('oops');
    expect(failed.stderr).toContain('failed (script_failure): step step-1 failed with exit code 7');
    // job show gives the reason with the message, and per attempt.
    const failedId = /submitted job (\d+)/.exec(failed.stderr)![1];
    const shown = await runCli(['job', 'show', failedId], env);
    expect(shown.stdout).toContain(
      'reason:     script_failure (a step exited with a non-zero code)\nmessage:    step step-1 failed with exit code 7\n',
    );
    expect(shown.stdout).toMatch(
      /#1 on cli-exec: failed \(\S+\) \[script_failure\] step step-1 failed with exit code 7$/m,
    );
    const shownJson = JSON.parse((await runCli(['job', 'show', failedId, '--json'], env)).stdout);
    expect(shownJson.job.failureReason).toBe('script_failure');
    expect(shownJson.attempts[0].failureReason).toBe('script_failure');

    // --queue overrides the file's queue; --json prints the job.
    const moved = await runCli(['job', 'submit', failing, '--queue', 'other', '--json'], env);
    expect(JSON.parse(moved.stdout).queue).toBe('other');
  });

  it('rejects an invalid spec before sending it, naming the field', async () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'queue: default\nsteps:\n  - run: echo\n    timeout: whenever\n');
    const result = await runCli(['job', 'submit', bad], { ...env, DOCKHAND_URL: 'http://127.0.0.1:1' });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('steps[0].timeout');
    const missing = await runCli(['job', 'submit', path.join(dir, 'nope.yaml')], env);
    expect(missing.stderr).toContain('cannot read');
  });

  it('lists, shows, cancels and retries jobs, and lists executors', async () => {
    const long = path.join(dir, 'long.yaml');
    writeFileSync(long, 'queue: default\nsteps:\n  - key: nap\n    run: echo napping; sleep 60\n');
    const submitted = JSON.parse((await runCli(['job', 'submit', long, '--json'], env)).stdout) as { id: number };
    const follow = new Proc(['job', 'logs', String(submitted.id), '--follow'], env, 'cli-logs-follow');
    await follow.waitFor(/napping/);

    const list = await runCli(['job', 'list', '--state', 'processing'], env);
    expect(list.stdout).toMatch(new RegExp(`^${submitted.id}\\s+default\\s+processing`, 'm'));
    const show = await runCli(['job', 'show', String(submitted.id)], env);
    expect(show.stdout).toContain(`job ${submitted.id}  processing`);
    expect(show.stdout).toContain('on cli-exec: running');

    const cancel = await runCli(['job', 'cancel', String(submitted.id)], env);
    expect(cancel.code).toBe(0);
    expect(await follow.exit()).toBe(2);
    const shown = JSON.parse((await runCli(['job', 'show', String(submitted.id), '--json'], env)).stdout);
    expect(shown.job).toMatchObject({ state: 'canceled', failureReason: 'canceled' });
    expect((await runCli(['job', 'show', String(submitted.id)], env)).stdout).toContain(
      'reason:     canceled (a user canceled the job)\n',
    );

    const logs = await runCli(['job', 'logs', String(submitted.id)], env);
    expect(logs.stdout).toBe('napping\n');
    expect(logs.stderr).toContain('==> step.nap');

    const retry = await runCli(['job', 'retry', String(submitted.id), '--json'], env);
    expect(JSON.parse(retry.stdout).state).toBe('queued');
    await runCli(['job', 'cancel', String(submitted.id)], env);

    const executors = await runCli(['executors'], env);
    expect(executors.stdout).toMatch(/NAME\s+HOSTNAME\s+QUEUES\s+VERSION/);
    expect(executors.stdout).toMatch(/cli-exec\s+\S+\s+default,other\s+\d+\.\d+\.\d+\s+shell\s+-\s/);
    const json = JSON.parse((await runCli(['executors', '--json'], env)).stdout);
    expect(json[0]).toMatchObject({ name: 'cli-exec', queues: ['default', 'other'], active: true });
    // The executor runs the server's own release.
    expect(executors.stdout).toMatch(/LAST SEEN\s+ACTIVE\s+COMPAT$/m);
    expect(executors.stdout).toMatch(/^cli-exec\s.*\syes\s+ok$/m);
    expect(json[0].compatibility).toBe('up_to_date');

    const notAnId = await runCli(['job', 'show', 'abc'], env);
    expect(notAnId.code).not.toBe(0);
    expect(notAnId.stderr).toContain('not a job id');
    const wrongToken = await runCli(['job', 'list'], { ...env, DOCKHAND_TOKEN: 'dha_wrong' });
    expect(wrongToken.stderr).toContain('invalid API token');
    const noServer = await runCli(['job', 'list'], { ...env, DOCKHAND_URL: 'http://127.0.0.1:1' });
    expect(noServer.stderr).toContain('cannot reach Dockhand at http://127.0.0.1:1');
  });

  it('lists queues with the jobs done and failed in the last hour', async () => {
    type Row = {
      queue: string;
      queued: number;
      processing: number;
      oldestQueuedAt: number | null;
      completedLastHour: number;
      failedLastHour: number;
    };
    const stats = async (): Promise<Row | undefined> =>
      (JSON.parse((await runCli(['queues', '--json'], env)).stdout) as Row[]).find((q) => q.queue === 'default');
    const before = (await stats()) ?? { completedLastHour: 0, failedLastHour: 0 };
    const ok = path.join(dir, 'ok.yaml');
    writeFileSync(ok, 'queue: default\nsteps:\n  - run: "true"\n');
    const bad = path.join(dir, 'exit3.yaml');
    writeFileSync(bad, 'queue: default\nsteps:\n  - run: exit 3\n');
    expect((await runCli(['job', 'submit', ok, '--follow'], env)).code).toBe(0);
    expect((await runCli(['job', 'submit', bad, '--follow'], env)).code).toBe(1);

    const after = (await stats())!;
    expect(after).toMatchObject({
      completedLastHour: before.completedLastHour + 1,
      failedLastHour: before.failedLastHour + 1,
    });
    const table = (await runCli(['queues'], env)).stdout;
    expect(table).toMatch(/^QUEUE\s+QUEUED\s+RUNNING\s+OLDEST QUEUED\s+DONE 1H\s+FAILED 1H$/m);
    expect(table).toMatch(
      new RegExp(`^default\\s+\\d+\\s+\\d+\\s+.+?\\s+${after.completedLastHour}\\s+${after.failedLastHour}$`, 'm'),
    );
  });

  it('shows whether each executor suits the server', async () => {
    const beat = (executorName: string, version: string) =>
      fetch(`${server.url}/api/executor/v1/heartbeat`, {
        method: 'POST',
        headers: { authorization: `token-executor ${EXECUTORS_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          executorName,
          hostname: 'h',
          os: 'linux',
          arch: 'x64',
          version,
          runtime: 'shell',
          queues: ['fake'],
          jobs: [],
        }),
      });
    expect((await beat('from-the-future', '99.0.0')).status).toBe(200);
    expect((await beat('dev-build', '0.0.0-dev')).status).toBe(200);

    const { stdout } = await runCli(['executors'], env);
    expect(stdout).toMatch(/^from-the-future\s.*\s99\.0\.0\s.*\syes\s+AHEAD \(server \d+\.\d+\.\d+\S*\)$/m);
    expect(stdout).toMatch(/^dev-build\s.*\syes\s+-$/m);
    const json = JSON.parse((await runCli(['executors', '--json'], env)).stdout) as {
      name: string;
      compatibility: string | null;
    }[];
    expect(json.find((e) => e.name === 'from-the-future')?.compatibility).toBe('version_ahead');
    expect(json.find((e) => e.name === 'dev-build')?.compatibility).toBeNull();
  });
});

describe('starting Dockhand', () => {
  it('server refuses to start without a long enough executors token, saying how to set one', async () => {
    const missing = await runCli(['server', '--port', '0'], { DOCKHAND_EXECUTORS_ACCESS_TOKEN: '' });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('DOCKHAND_EXECUTORS_ACCESS_TOKEN is not set');
    expect(missing.stderr).toContain('openssl rand -hex 32');
    const short = await runCli(['server', '--port', '0'], { DOCKHAND_EXECUTORS_ACCESS_TOKEN: 'short' });
    expect(short.stderr).toContain('only 5 characters');
    const badDatabase = await runCli(['server', '--port', '0'], {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
      DOCKHAND_DATABASE_URL: 'mysql://app:hunter2@db/app',
    });
    expect(badDatabase.code).toBe(2);
    expect(badDatabase.stderr).toContain(
      'DOCKHAND_DATABASE_URL must be a PostgreSQL URL, postgres://USER:PASSWORD@HOST:PORT/DATABASE',
    );
    expect(badDatabase.stderr).not.toContain('hunter2');
  });

  it('server prints an admin token once, on the first start only', async () => {
    const dataDir = await tempDir('bootstrap');
    const first = new Proc(
      ['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir],
      { DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN, DOCKHAND_ADMIN_TOKEN: '' },
      'bootstrap-1',
    );
    const [, token] = await first.waitFor(/Admin API token[^\n]*\n\n\s+(dha_\w+)/);
    const url = (await first.waitFor(/listening on (\S+)/))[1];
    const list = await runCli(['job', 'list'], { DOCKHAND_URL: url, DOCKHAND_TOKEN: token });
    expect(list.code).toBe(0);
    await first.stop();
    const second = new Proc(
      ['server', '--host', '127.0.0.1', '--port', '0', '--data-dir', dataDir],
      { DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN, DOCKHAND_ADMIN_TOKEN: '' },
      'bootstrap-2',
    );
    await second.waitFor(/listening on/);
    // Stopped and gone, it has printed all it ever will.
    second.signal('SIGTERM');
    expect(await second.exit()).toBe(0);
    expect(second.output).not.toContain('Admin API token');
  });

  it('executor stopped while it waits for its server exits at once, with status 0', async () => {
    const executor = new Proc(
      ['executor'],
      {
        EXECUTOR_FRONTEND_URL: `http://127.0.0.1:${await freePort()}`,
        EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
        EXECUTOR_QUEUE_NAME: 'q',
        EXECUTOR_RUNTIME: 'shell',
      },
      'startup-signal-executor',
    );
    await executor.waitFor(/waiting for the server to answer/);
    executor.signal('SIGTERM');
    expect(await executor.exit()).toBe(0);
    expect(executor.output).toContain('stopping once start-up has finished');
  });

  it('executor refuses a bad configuration with a message naming the variable', async () => {
    const noUrl = await runCli(['executor'], {
      EXECUTOR_FRONTEND_URL: '',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: 'q',
    });
    expect(noUrl.stderr).toContain('EXECUTOR_FRONTEND_URL');
    const noQueue = await runCli(['executor'], {
      EXECUTOR_FRONTEND_URL: 'http://127.0.0.1:1',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: '',
      EXECUTOR_QUEUE_NAMES: '',
    });
    expect(noQueue.stderr).toContain('EXECUTOR_QUEUE_NAME');
    const badJobs = await runCli(['executor'], {
      EXECUTOR_FRONTEND_URL: 'http://127.0.0.1:1',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: 'q',
      EXECUTOR_MAXIMUM_NUM_JOBS: 'many',
    });
    expect(badJobs.stderr).toContain('EXECUTOR_MAXIMUM_NUM_JOBS="many" must be a whole number');
    const badRuntime = await runCli(['executor'], {
      EXECUTOR_FRONTEND_URL: 'http://127.0.0.1:1',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: 'q',
      EXECUTOR_RUNTIME: 'magic',
    });
    expect(badRuntime.stderr).toContain('EXECUTOR_RUNTIME must be one of: shell, docker');
    const slowBeat = await runCli(['executor'], {
      EXECUTOR_FRONTEND_URL: 'http://127.0.0.1:1',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: 'q',
      EXECUTOR_HEARTBEAT_INTERVAL: '60s',
    });
    expect(slowBeat.stderr).toContain('EXECUTOR_HEARTBEAT_INTERVAL="60s" must be from 100ms to 20s');
    const base = {
      EXECUTOR_FRONTEND_URL: 'http://127.0.0.1:1',
      EXECUTOR_FRONTEND_PASSWORD: EXECUTORS_TOKEN,
      EXECUTOR_QUEUE_NAME: 'q',
      EXECUTOR_RUNTIME: 'docker',
    };
    const badCpus = await runCli(['executor'], { ...base, EXECUTOR_JOB_NUM_CPUS: '-1' });
    expect(badCpus.stderr).toContain('EXECUTOR_JOB_NUM_CPUS="-1" must be a number from 0 to 1024');
    const badNetwork = await runCli(['executor'], { ...base, EXECUTOR_DOCKER_NETWORK: 'host' });
    expect(badNetwork.stderr).toContain(
      'EXECUTOR_DOCKER_NETWORK must be "bridge" (network with the metadata address blocked) or "none"',
    );
    // Registry credentials are named, never repeated, when they are wrong.
    const badAuth = await runCli(['executor'], {
      ...base,
      EXECUTOR_DOCKER_AUTH_CONFIG: '{"auths": {"r.example.com": {"pasword": "hunter2"}}}',
    });
    expect(badAuth.stderr).toContain('EXECUTOR_DOCKER_AUTH_CONFIG auths.r.example.com: needs "auth"');
    expect(badAuth.stderr).not.toContain('hunter2');
    expect(badAuth.code).not.toBe(0);
  });

  it('`dockhand up` runs a server and a local executor; the CLI on the machine just works', async () => {
    const home = await tempDir('up-home');
    const upEnv = {
      HOME: home,
      XDG_CONFIG_HOME: '',
      XDG_DATA_HOME: '',
      DOCKHAND_URL: '',
      DOCKHAND_TOKEN: '',
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: '',
      DOCKHAND_DATA_DIR: '',
      EXECUTOR_RUNTIME: '',
      EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE,
    };
    const up = new Proc(['up', '--port', '0'], upEnv, 'up');
    try {
      const [, url] = await up.waitFor(/Dockhand is up: (http:\S+)/);
      expect(up.output).toMatch(/API token: dha_\w+/);
      // This machine has a Docker engine, so steps run in containers.
      expect(up.output).toContain('runtime:   docker: a Docker engine answered');
      const hello = await runCli(['job', 'submit', 'examples/hello.yaml', '--follow'], upEnv);
      expect(hello.stderr).toContain('submitted job 1');
      expect(hello.stdout).toContain('step 2 reads what step 1 wrote: done');
      expect(hello.code).toBe(0);
      const executors = JSON.parse((await runCli(['executors', '--json'], upEnv)).stdout);
      expect(executors).toHaveLength(1);
      // The docker runtime enforces per-job limits and says so: 4 CPUs capped at this host's, 12 GiB, a 20 GiB disk.
      expect(executors[0]).toMatchObject({
        runtime: 'docker',
        jobCpus: expect.any(Number),
        jobMemoryBytes: 12 * 2 ** 30,
        jobDiskBytes: 20 * 2 ** 30,
      });
      expect((await runCli(['executors'], upEnv)).stdout).toMatch(/PER JOB[\s\S]*docker\s+\d+ CPUs, 12Gi, 20Gi disk\s/);
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      up.signal('SIGTERM');
      expect(await up.exit()).toBe(0);
    }
    // A second start keeps the data and mints a new token the CLI picks up; without an engine it says it uses shell.
    const again = new Proc(
      ['up', '--port', '0'],
      { ...upEnv, DOCKER_HOST: `unix://${home}/no-docker.sock` },
      'up-again',
    );
    try {
      await again.waitFor(/Dockhand is up/);
      expect(again.output).toMatch(
        /runtime: {3}shell: no usable Docker engine \(the Docker engine at unix:\/\/.*no-docker\.sock is not reachable/,
      );
      expect(again.output).toMatch(/NO isolation/);
      const list = JSON.parse((await runCli(['job', 'list', '--json'], upEnv)).stdout);
      expect(list.jobs.map((j: { state: string }) => j.state)).toEqual(['completed']);
    } finally {
      again.signal('SIGTERM');
      await again.exit();
    }
  });
});
