// End to end: a real server and two real executors running jobs on the shell runtime.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestClient } from '../support/api.js';
import { startGitServer, type GitServer } from '../support/gitServer.js';
import { startExecutor, startServer, tempDir, type ExecutorHandle, type ServerHandle } from '../support/processes.js';
import { until } from '../support/wait.js';

let server: ServerHandle;
let executors: ExecutorHandle[] = [];
let client: TestClient;
let scratch: string;
let git: GitServer;
let privateGit: GitServer;

beforeAll(async () => {
  scratch = await tempDir('jobs');
  git = await startGitServer();
  privateGit = await startGitServer({ credentials: { user: 'deploy', password: 'private-pa55' } });
  server = await startServer({ name: 'jobs-server', env: { DOCKHAND_RETRY_BACKOFF: '100ms' } });
  client = new TestClient(server.url);
  executors = await Promise.all([
    startExecutor(server.url, { name: 'jobs-exec-1', queues: ['alpha', 'beta'] }),
    startExecutor(server.url, { name: 'jobs-exec-2', queues: ['beta', 'alpha'] }),
  ]);
});

afterAll(async () => {
  await Promise.all(executors.map((e) => e.stop()));
  await server?.stop();
  await git?.close();
  await privateGit?.close();
});

describe('jobs on two executors', () => {
  it('runs 50 jobs over two queues, each exactly once, with complete logs in order', async () => {
    const runs = path.join(scratch, 'runs.log');
    const lines = 30;
    const jobs = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        client.submit({
          queue: i % 2 ? 'alpha' : 'beta',
          steps: [
            {
              key: 'count',
              run: `echo "$DOCKHAND_JOB_ID" >> ${runs}\ni=1\nwhile [ $i -le ${lines} ]; do echo "job $DOCKHAND_JOB_ID line $i"; echo "err $i" >&2; i=$((i+1)); done`,
            },
            { key: 'second', run: 'echo second step' },
          ],
        }),
      ),
    );
    for (const job of jobs) await client.waitForState(job.id, 'completed', 60_000);

    const ran = readFileSync(runs, 'utf8')
      .trim()
      .split('\n')
      .map(Number)
      .sort((a, b) => a - b);
    expect(ran).toEqual(jobs.map((j) => j.id).sort((a, b) => a - b));

    for (const job of jobs) {
      const { entries } = await client.logs(job.id);
      expect(entries.map((e) => e.key)).toEqual(['step.count', 'step.second']);
      const stdout = entries[0].out.split('\n').filter((l) => l.startsWith('stdout: '));
      const stderr = entries[0].out.split('\n').filter((l) => l.startsWith('stderr: '));
      expect(stdout).toEqual(Array.from({ length: lines }, (_, i) => `stdout: job ${job.id} line ${i + 1}`));
      expect(stderr).toEqual(Array.from({ length: lines }, (_, i) => `stderr: err ${i + 1}`));
      expect(entries.map((e) => e.exitCode)).toEqual([0, 0]);
    }
    const { body } = await client.call('GET', '/executors');
    const names = body.executors.map((e: { name: string }) => e.name);
    expect(names).toEqual(expect.arrayContaining(['jobs-exec-1', 'jobs-exec-2']));
  });

  it("does not let one namespace's batch starve another namespace's single job", async () => {
    await client.addOrg('batch');
    await client.addOrg('alone');
    const batch = await Promise.all(
      Array.from({ length: 40 }, () =>
        client.submit({ queue: 'alpha', namespace: 'org:batch', steps: [{ run: 'sleep 0.2' }] }),
      ),
    );
    await client.waitFor(batch[0].id, (j) => j.state !== 'queued');
    const single = await client.submit({ queue: 'alpha', namespace: 'org:alone', steps: [{ run: 'true' }] });
    const done = await client.waitForState(single.id, 'completed', 30_000);
    const started = await Promise.all(batch.map(async (j) => (await client.job(j.id)).job.startedAt));
    // Every executor slot that freed up after the single job arrived went to it first.
    const overtaking = started.filter((at) => at !== null && at > single.createdAt && at < done.startedAt!);
    expect(overtaking.length).toBeLessThanOrEqual(1);
    for (const job of batch) await client.waitForState(job.id, 'completed', 30_000);
  });

  it('streams output while the step is still running', async () => {
    const go = path.join(scratch, 'go-live');
    const job = await client.submit({
      queue: 'alpha',
      steps: [{ run: `echo first\nwhile [ ! -f ${go} ]; do sleep 0.05; done\necho second` }],
    });
    // The step cannot finish until the test sees "first" arrive and creates the go file.
    const live = await until(
      'the first line arrives',
      async () => {
        const [entry] = (await client.logs(job.id)).entries;
        return entry?.out.includes('stdout: first') ? entry : undefined;
      },
      20_000,
      25,
    );
    expect(live.out).not.toContain('second');
    expect(live.exitCode).toBeNull();
    writeFileSync(go, '');
    await client.waitForState(job.id, 'completed');
    expect((await client.logs(job.id)).entries[0].out).toBe('stdout: first\nstdout: second\n');
  });

  it('cancels a running sleep 60 and stops its processes within 2 s', async () => {
    const pidFile = path.join(scratch, 'sleep.pid');
    const job = await client.submit({ queue: 'beta', steps: [{ run: `sleep 60 &\necho $! > ${pidFile}\nwait` }] });
    await client.waitFor(job.id, () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    const started = Date.now();
    expect((await client.call('POST', `/jobs/${job.id}/cancel`)).status).toBe(200);
    await client.waitFor(job.id, (j) => j.state === 'canceled', 5_000);
    while (processAlive(pid) && Date.now() - started < 5_000) await sleep(10);
    const took = Date.now() - started;
    expect(processAlive(pid)).toBe(false);
    expect(took).toBeLessThan(2_000);
    const { job: done, attempts } = await client.job(job.id);
    expect(done.failureMessage).toBe('canceled by a user');
    expect(done.failureReason).toBe('canceled');
    expect(attempts[0]).toMatchObject({ outcome: 'canceled', failureReason: 'canceled' });
  });

  it('checks out a repository at the requested commit, shallow', async () => {
    const [first] = git.makeRepo('versions', [{ 'version.txt': 'one\n' }, { 'version.txt': 'two\n' }]);
    const job = await client.submit({
      queue: 'alpha',
      repository: { url: git.url('versions'), commit: first, dir: 'src' },
      files: { 'src/extra/note.txt': 'written by the job spec' },
      steps: [
        { dir: 'src', run: 'cat version.txt; cat extra/note.txt; echo; git rev-parse HEAD; git rev-list --count HEAD' },
      ],
    });
    const done = await client.waitFor(job.id, (j) => ['completed', 'failed'].includes(j.state));
    const { entries } = await client.logs(job.id);
    expect(done.state, JSON.stringify(entries, null, 1)).toBe('completed');
    expect(entries.map((e) => e.key)).toEqual([
      'setup.git.init',
      'setup.git.add-remote',
      'setup.git.fetch',
      'setup.git.checkout',
      'setup.files',
      'step.step-1',
    ]);
    expect(entries.at(-1)!.out).toBe(`stdout: one\nstdout: written by the job spec\nstdout: ${first}\nstdout: 1\n`);
  });

  it("checks out a private repository with a password from the job's secrets, masked in the log", async () => {
    privateGit.makeRepo('private', [{ 'readme.txt': 'private readme\n' }]);
    await client.setSecret('REPO_TOKEN', 'private-pa55\n');
    const repository = { url: privateGit.url('private'), username: 'deploy', passwordSecret: 'REPO_TOKEN' };
    const refused = await client.call('POST', '/jobs', { queue: 'alpha', repository, steps: [{ run: 'true' }] });
    expect(refused.status).toBe(400);
    expect(JSON.stringify(refused.body)).toContain('repository.passwordSecret');
    const job = await client.submit({
      queue: 'alpha',
      secrets: ['REPO_TOKEN'],
      repository,
      steps: [{ run: 'cat readme.txt; echo "$REPO_TOKEN"' }],
    });
    const done = await client.waitFor(job.id, (j) => ['completed', 'failed'].includes(j.state));
    const { entries } = await client.logs(job.id);
    expect(done.state, JSON.stringify(entries, null, 1)).toBe('completed');
    expect(entries.find((e) => e.key === 'setup.git.fetch')!.out).toContain('password in secret REPO_TOKEN');
    expect(JSON.stringify(entries)).not.toContain('private-pa55');
    expect(entries.at(-1)!.out).toBe('stdout: private readme\nstdout: ${{ secrets.REPO_TOKEN }}\nstdout: \n'); // the secret ends with a line break
  });

  it('creates a missing step dir, and refuses one that leads out of the workspace through a symlink', async () => {
    const outside = path.join(scratch, 'outside');
    git.makeRepo('symlink-repo', [{}], { symlinks: { out: outside } });
    const created = await client.submit({ queue: 'alpha', steps: [{ dir: 'build/output', run: 'pwd' }] });
    await client.waitForState(created.id, 'completed');
    expect((await client.logs(created.id)).entries[0].out).toMatch(/\/workspace\/build\/output\n$/);
    const escaping = await client.submit({
      queue: 'alpha',
      repository: { url: git.url('symlink-repo') },
      steps: [{ dir: 'out/deeper', run: 'touch escaped' }],
    });
    const failed = await client.waitForState(escaping.id, 'failed');
    expect(failed.failureMessage).toBe('step step-1: dir out/deeper leads outside the workspace through a symlink');
    expect(failed.failureReason).toBe('invalid_workspace');
    expect(existsSync(outside)).toBe(false);
  });

  it("refuses a file:// repository, which would be the executor host's own files", async () => {
    const job = await client.submit({
      queue: 'alpha',
      repository: { url: 'file:///etc' },
      steps: [{ run: 'cat passwd' }],
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.failureReason).toBe('repository_refused');
    expect(done.attempt).toBe(1);
    expect(done.failureMessage).toMatch(
      /does not check out file:\/\/ repositories.*EXECUTOR_ALLOW_LOCAL_REPOSITORIES=true/,
    );
    expect((await client.logs(job.id)).entries.map((e) => e.key)).toEqual([]);
  });

  it('stops at the first failing step and reports its exit code', async () => {
    const job = await client.submit({
      queue: 'beta',
      steps: [
        { key: 'ok', run: 'true' },
        { key: 'boom', run: 'echo about to fail; exit 3' },
        { key: 'never', run: 'echo unreachable' },
      ],
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.failureMessage).toBe('step boom failed with exit code 3');
    expect(done.failureReason).toBe('script_failure');
    expect(done.attempt).toBe(1);
    expect((await client.job(job.id)).attempts).toEqual([
      expect.objectContaining({ outcome: 'failed', failureReason: 'script_failure' }),
    ]);
    const { entries } = await client.logs(job.id);
    expect(entries.map((e) => [e.key, e.exitCode])).toEqual([
      ['step.ok', 0],
      ['step.boom', 3],
    ]);
  });

  it('enforces step timeouts and the job maximum runtime', async () => {
    const slowStep = await client.submit({
      queue: 'alpha',
      steps: [{ key: 'slow', run: 'sleep 30', timeout: '500ms' }],
    });
    const slowJob = await client.submit({ queue: 'alpha', maxRuntime: '700ms', steps: [{ run: 'sleep 30' }] });
    expect(await client.waitForState(slowStep.id, 'failed')).toMatchObject({
      failureMessage: 'step slow timed out after 500ms',
      failureReason: 'step_timeout',
    });
    expect(await client.waitForState(slowJob.id, 'failed')).toMatchObject({
      failureMessage: 'job exceeded its maximum runtime of 700ms',
      failureReason: 'job_timeout',
    });
    expect((await client.job(slowStep.id)).attempts[0].failureReason).toBe('step_timeout');
    // A step that shrugs off SIGTERM and exits 0 still timed out.
    const stubborn = await client.submit({
      queue: 'alpha',
      steps: [{ key: 'stubborn', run: "trap 'exit 0' TERM\nwhile true; do sleep 0.05; done", timeout: '300ms' }],
    });
    expect(await client.waitForState(stubborn.id, 'failed')).toMatchObject({
      failureMessage: 'step stubborn timed out after 300ms',
      failureReason: 'step_timeout',
    });
  });

  it('retries retryable errors with backoff until attempts run out', async () => {
    const job = await client.submit({
      queue: 'beta',
      maxAttempts: 2,
      repository: { url: git.url('no-such-repo') },
      steps: [{ run: 'true' }],
    });
    const done = await client.waitForState(job.id, 'failed');
    expect(done.attempt).toBe(2);
    expect(done.numFailures).toBe(2);
    expect(done.failureMessage).toContain('setup.git.fetch failed');
    expect(done.failureReason).toBe('checkout_failure');
    const { attempts } = await client.job(job.id);
    expect(attempts.map((a) => [a.outcome, a.failureReason])).toEqual([
      ['errored', 'checkout_failure'],
      ['errored', 'checkout_failure'],
    ]);
  });

  it('retries a finished job on request', async () => {
    const marker = path.join(scratch, 'retry-marker');
    const job = await client.submit({
      queue: 'alpha',
      steps: [{ run: `if [ -f ${marker} ]; then echo second time; else touch ${marker}; exit 1; fi` }],
    });
    expect((await client.waitForState(job.id, 'failed')).failureReason).toBe('script_failure');
    const retried = await client.call('POST', `/jobs/${job.id}/retry`);
    expect(retried.status).toBe(200);
    expect(retried.body.job).toMatchObject({ state: 'queued', failureMessage: null, failureReason: null });
    const done = await client.waitForState(job.id, 'completed');
    expect(done).toMatchObject({ attempt: 2, failureReason: null });
    expect((await client.job(job.id)).attempts.map((a) => a.failureReason)).toEqual(['script_failure', null]);
    expect((await client.logs(job.id)).entries[0].out).toBe('stdout: second time\n');
    expect((await client.logs(job.id, 1)).entries[0].exitCode).toBe(1);
  });
});

/** Running, as opposed to gone or a zombie (dead, waiting for whichever init adopted it to reap it). */
function processAlive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2] !== 'Z';
  } catch {
    return false;
  }
}
