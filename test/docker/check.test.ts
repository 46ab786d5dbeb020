// `dockhand executor --check`: the docker runtime's self-test, as a user runs it on a machine being set up.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DOCKER_TEST_IMAGE } from '../support/docker.js';
import { CLI, ROOT } from '../support/processes.js';

function check(env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'executor', '--check'],
      {
        cwd: ROOT,
        timeout: 60_000,
        env: { ...process.env, EXECUTOR_RUNTIME: 'docker', EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE, ...env },
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('dockhand executor --check', () => {
  it.each(['runc', 'runsc'])('passes under %s: engine, OCI runtime, network and a test container', async (oci) => {
    const { code, stdout } = await check({ EXECUTOR_DOCKER_RUNTIME: oci });
    expect(stdout).toContain(`Runtime docker (OCI runtime ${oci}):`);
    expect(stdout).toMatch(/ok {3}engine: Docker \S+ \(API [\d.]+\)/);
    expect(stdout).toContain(`ok   OCI runtime: ${oci} is registered`);
    // gVisor as registered here (--network=none) has only loopback, so its steps need no Docker network at all.
    expect(stdout).toContain(
      oci === 'runsc'
        ? 'ok   network: runsc runs with --network=none: steps have only loopback'
        : 'ok   metadata block: 169.254.0.0/16 (including 169.254.169.254) is rejected from dockhand0',
    );
    expect(stdout).toContain(`ok   test container: a step container ran under ${oci} from ${DOCKER_TEST_IMAGE}`);
    expect(stdout).toContain('all checks passed');
    expect(code).toBe(0);
  });

  it('needs no coordinator settings, and says what is wrong and how to fix it', async () => {
    const unknown = await check({
      EXECUTOR_DOCKER_RUNTIME: 'kata',
      EXECUTOR_FRONTEND_URL: '',
      EXECUTOR_FRONTEND_PASSWORD: '',
      EXECUTOR_QUEUE_NAME: '',
    });
    expect(unknown.stdout).toMatch(
      /FAIL setup: EXECUTOR_DOCKER_RUNTIME=kata is not a runtime this Docker engine knows \(it has: .*runsc.*\)/,
    );
    expect(unknown.stdout).toContain(
      'fix: register kata in /etc/docker/daemon.json under "runtimes" and restart dockerd',
    );
    expect(unknown.code).toBe(1);

    const noEngine = await check({ DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
    expect(noEngine.stdout).toContain(
      'FAIL setup: the Docker engine at unix:///nonexistent/docker.sock is not reachable',
    );
    expect(noEngine.stdout).toContain('fix: start dockerd');
    expect(noEngine.code).toBe(1);

    const noImage = await check({
      EXECUTOR_DOCKER_DEFAULT_IMAGE: '127.0.0.1:1/missing:1',
      EXECUTOR_DOCKER_NETWORK: 'none',
    });
    expect(noImage.stdout).toContain(
      'ok   network: EXECUTOR_DOCKER_NETWORK=none: steps and checkouts have no network at all',
    );
    expect(noImage.stdout).toMatch(/FAIL test container: cannot pull image 127\.0\.0\.1:1\/missing:1/);
    expect(noImage.stdout).toContain('1 check failed');
    expect(noImage.code).toBe(1);
  });
});
