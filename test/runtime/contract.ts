// The runtime contract suite: one set of scenarios every runtime runs, directly against its JobSession (no server,
// no agent), the way test/store/contract.ts holds every store to one contract. A runtime's test file calls
// runtimeContract() with a way to make it; what differs between runtimes (the start errors it can meet, the
// leftovers it can leave) comes in through the options, and a limit a runtime does not enforce is asserted as
// such (limits() says so), never skipped.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FailureReason } from '../../src/core/failureReasons.js';
import { parseJobSpec, type JobSpecInput, type StepSpec } from '../../src/core/jobSpec.js';
import { effectiveLimits } from '../../src/core/resources.js';
import type { EntryHandle, Stream } from '../../src/executor/jobLog.js';
import { jobView } from '../../src/executor/jobRunner.js';
import {
  JobFailure,
  stepEnv,
  type JobSession,
  type Runtime,
  type StepResult,
} from '../../src/executor/runtimes/runtime.js';
import { startGitServer, type GitServer } from '../support/gitServer.js';
import { tempDir } from '../support/processes.js';
import { startSshServer, type SshServer } from '../support/sshServer.js';
import { until } from '../support/wait.js';

export interface ContractOptions {
  /** Makes the runtime under test with these EXECUTOR_* settings on top of the file's own (a fresh object each time). */
  make(env?: NodeJS.ProcessEnv): Promise<Runtime>;
  /** The address this host has on the job's network (where a checkout reaches the test's git and ssh servers). */
  hostAddress(): Promise<string>;
  /** Steps this runtime cannot start, and the reason it must give. */
  startErrors: { name: string; step: () => Partial<StepSpec>; reason: FailureReason }[];
  /** What the runtime has left of an executor's jobs (containers, mounts, directories), by executor name. */
  leftovers(executorName: string): Promise<string[]>;
  /**
   * How the runtime differs where its platform decides (default: like a container engine). `mergedStreams`: the
   * step's stderr arrives on stdout (Kubernetes' log API has one stream). `noLocalRepositories`: file:// is refused
   * even where the executor allows it (the job runs on a host that is not the executor's). `diskFullAfterMs`: a full
   * disk is noticed that long after it fills (an eviction), not by the write that fills it.
   */
  platform?: { mergedStreams?: boolean; noLocalRepositories?: boolean; diskFullAfterMs?: number };
}

/** A job's log as the session wrote it: entries and their output, in order. */
class RecordedLog {
  readonly entries: { key: string; command: string[]; out: { stream: Stream; text: string }[]; exitCode?: number }[] =
    [];

  startEntry(key: string, command: string[]): EntryHandle {
    const entry: RecordedLog['entries'][number] = { key, command, out: [] };
    this.entries.push(entry);
    return {
      write: (stream, text) => (entry.out.push({ stream, text }), true),
      whenWritable: async () => undefined,
      note: (line) => void entry.out.push({ stream: 'stderr', text: `${line}\n` }),
      finish: (exitCode) => void (entry.exitCode = exitCode),
    };
  }

  text(key: string): string {
    return (this.entries.find((e) => e.key === key)?.out ?? []).map((o) => o.text).join('');
  }
}

/** What a step wrote, by stream, as the session delivered it. */
class StepOutput {
  readonly chunks: { stream: Stream; text: string }[] = [];
  bytes = 0;
  /** While held, output() answers false and outputWritable() waits for release(). */
  private held?: { promise: Promise<void>; resolve(): void };

  hold(): void {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.held = { promise, resolve };
  }

  release(): void {
    this.held?.resolve();
    this.held = undefined;
  }

  io(signal: AbortSignal, note: (line: string) => void = () => undefined) {
    return {
      output: (stream: Stream, text: string) => {
        this.chunks.push({ stream, text });
        this.bytes += Buffer.byteLength(text);
        return this.held === undefined;
      },
      outputWritable: () => this.held?.promise ?? Promise.resolve(),
      note,
      signal,
    };
  }

  of(stream: Stream): string {
    return this.chunks
      .filter((c) => c.stream === stream)
      .map((c) => c.text)
      .join('');
  }
}

let nextJobId = 1;

/** One job on the runtime under test: its session, prepared, ready to run steps. */
async function openJob(
  runtime: Runtime,
  input: Omit<JobSpecInput, 'queue'>,
  opts: { prepare?: boolean; secrets?: Record<string, string> } = {},
) {
  const parsed = parseJobSpec({ queue: 'contract', ...input });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const spec = parsed.value;
  const job = jobView(
    {
      id: nextJobId++,
      attempt: 1,
      token: 'dhj_never-given-to-a-runtime',
      queue: 'contract',
      namespace: 'default',
      spec,
      secrets: opts.secrets ?? { API_KEY: 's3cret-value' },
    },
    effectiveLimits(spec.resources, runtime.limits?.() ?? { cpus: 0, memoryBytes: 0, diskBytes: 0 }),
  );
  expect(JSON.stringify(job)).not.toContain('dhj_never-given-to-a-runtime');
  const session = await runtime.open(job, new AbortController().signal);
  const log = new RecordedLog();
  const abort = new AbortController();
  if (opts.prepare !== false) {
    try {
      await session.prepare({ log, signal: abort.signal });
    } catch (err) {
      await session.close();
      throw err;
    }
  }
  return {
    job,
    session,
    log,
    /** Runs step `index` with its output recorded; `signal` stops it. */
    run(index: number, out = new StepOutput(), signal = new AbortController().signal): Promise<StepResult> {
      const step = spec.steps[index];
      return session.runStep({ index, step, env: stepEnv(job, step) }, out.io(signal));
    },
    close: () => session.close(),
  };
}

/** Settles to the error a promise rejects with (or fails when it resolves). */
async function failureOf(promise: Promise<unknown>): Promise<JobFailure> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JobFailure);
  return err as JobFailure;
}

function git(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) =>
    execFile('git', args, { env: { ...process.env, ...env } }, (err, _out, stderr) =>
      resolve({ code: err ? 1 : 0, stderr }),
    ),
  );
}

export function runtimeContract(name: string, opts: ContractOptions): void {
  describe(`runtime contract: ${name}`, () => {
    let runtime: Runtime;
    let gitServer: GitServer;
    let authServer: GitServer;
    let ssh: SshServer;
    let host: string;
    const sessions: JobSession[] = [];
    const open = async (...args: Parameters<typeof openJob>) => {
      const job = await openJob(...args);
      sessions.push(job.session);
      return job;
    };

    beforeAll(async () => {
      runtime = await opts.make();
      await runtime.cleanupOrphans?.();
      [gitServer, authServer, ssh, host] = await Promise.all([
        startGitServer(),
        startGitServer({ credentials: { user: 'deploy', password: 'pa55-word' } }),
        startSshServer(),
        opts.hostAddress(),
      ]);
    });

    afterAll(async () => {
      for (const session of sessions) await session.close().catch(() => undefined);
      await runtime?.close?.();
      await Promise.all([gitServer?.close(), authServer?.close(), ssh?.stop()]);
    });

    it('streams stdout and stderr apart (or says it cannot) while the step runs, and gives its exit code', async () => {
      const job = await open(runtime, {
        steps: [{ run: 'echo out-1; sleep 0.2; echo err-1 >&2; sleep 2; echo out-2; exit 7' }],
      });
      const out = new StepOutput();
      let settled = false;
      const result = job.run(0, out).finally(() => (settled = true));
      await until(
        'the first lines arrive',
        () => out.of('stdout').includes('out-1') && (out.of('stderr') + out.of('stdout')).includes('err-1'),
      );
      // Two seconds of sleep are still to go: the lines came while the step ran.
      expect(settled).toBe(false);
      expect(await result).toMatchObject({ exitCode: 7 });
      if (opts.platform?.mergedStreams) {
        expect(out.of('stdout')).toBe('out-1\nerr-1\nout-2\n');
        expect(out.of('stderr')).toBe('');
        return;
      }
      expect(out.of('stdout')).toBe('out-1\nout-2\n');
      expect(out.of('stderr')).toBe('err-1\n');
    });

    it('applies backpressure: a held log stops the step until it can take more, and loses nothing', async () => {
      const total = 32 * 2 ** 20;
      const job = await open(runtime, {
        steps: [{ run: `yes 0123456789abcdef0123456789abcdef | head -c ${total}; echo; echo end` }],
      });
      const out = new StepOutput();
      out.hold();
      let settled = false;
      const result = job.run(0, out).finally(() => (settled = true));
      // The step is blocked once what was delivered stops growing (a pipe's worth or so, not the 32 MiB).
      let last = -1;
      await until(
        'delivered output stops growing',
        () => {
          const stable = out.bytes > 0 && out.bytes === last;
          last = out.bytes;
          return stable;
        },
        60_000,
        500,
      );
      expect(settled).toBe(false);
      expect(out.bytes).toBeLessThan(total / 2);
      out.release();
      expect((await result).exitCode).toBe(0);
      const stdout = out.of('stdout');
      expect(stdout.length).toBe(total + '\nend\n'.length);
      expect(stdout.endsWith('\nend\n')).toBe(true);
    });

    it('passes on a line of megabytes without a break, whole', async () => {
      const job = await open(runtime, {
        steps: [{ run: "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo end" }],
      });
      const out = new StepOutput();
      expect((await job.run(0, out)).exitCode).toBe(0);
      const stdout = out.of('stdout');
      expect(stdout).toBe(`${'a'.repeat(3_000_000)}\nend\n`);
    });

    it('stops a step within 2 s of its abort', async () => {
      const job = await open(runtime, { steps: [{ run: "trap '' TERM; echo started; sleep 60" }] });
      const out = new StepOutput();
      const abort = new AbortController();
      const result = job.run(0, out, abort.signal);
      await until('the step runs', () => out.of('stdout').includes('started'));
      const stoppedAt = Date.now();
      abort.abort();
      const { exitCode } = await result;
      expect(exitCode).not.toBe(0);
      expect(Date.now() - stoppedAt).toBeLessThan(2_000);
    });

    it("gives each step its env (Dockhand's, its own, the secrets) and its working dir", async () => {
      const job = await open(runtime, {
        steps: [
          {
            key: 'env',
            dir: 'a/b',
            env: { GREETING: 'hello there' },
            run: 'echo "$GREETING|$DOCKHAND_JOB_ID|$DOCKHAND_STEP_KEY|$API_KEY|$CI"; pwd',
          },
        ],
      });
      const out = new StepOutput();
      expect((await job.run(0, out)).exitCode).toBe(0);
      const [vars, pwd] = out.of('stdout').trim().split('\n');
      expect(vars).toBe(`hello there|${job.job.id}|env|s3cret-value|true`);
      expect(pwd).toMatch(/\/a\/b$/);
    });

    it("keeps the workspace between steps, with the job's files in it", async () => {
      const job = await open(runtime, {
        files: { 'in/hello.txt': 'hello from the spec' },
        steps: [{ run: 'cat in/hello.txt > made.txt; echo " and step 1" >> made.txt' }, { run: 'cat made.txt' }],
      });
      expect(job.log.text('setup.files')).toContain('wrote in/hello.txt (19 bytes)');
      expect((await job.run(0)).exitCode).toBe(0);
      const out = new StepOutput();
      expect((await job.run(1, out)).exitCode).toBe(0);
      expect(out.of('stdout')).toBe('hello from the spec and step 1\n');
    });

    it('gives every job a fresh workspace: nothing of an earlier job is left in it', async () => {
      for (let round = 1; round <= 3; round++) {
        const job = await open(runtime, {
          files: { [`mine-${round}.txt`]: 'x' },
          steps: [
            {
              run: `ls -A | sort | tr '\\n' ' '; echo; mkdir -p left/behind; echo secret > left/behind/file-${round}; head -c 3000000 /dev/zero > big-${round}`,
            },
          ],
        });
        const out = new StepOutput();
        expect((await job.run(0, out)).exitCode).toBe(0);
        expect(out.of('stdout')).toBe(`mine-${round}.txt \n`);
        await job.close();
      }
    });

    it('checks a repository out at a commit, in its dir, before the files', async () => {
      const [first] = gitServer.makeRepo('contract-versions', [{ 'version.txt': 'one\n' }, { 'version.txt': 'two\n' }]);
      const job = await open(runtime, {
        repository: { url: gitServer.url('contract-versions', { host }), commit: first, dir: 'src' },
        files: { 'src/extra.txt': 'extra' },
        steps: [{ dir: 'src', run: 'cat version.txt extra.txt; echo; ls -a .git >/dev/null && echo has-git' }],
      });
      expect(job.log.entries.map((e) => [e.key, e.exitCode])).toEqual([
        ['setup.git.init', 0],
        ['setup.git.add-remote', 0],
        ['setup.git.fetch', 0],
        ['setup.git.checkout', 0],
        ['setup.files', 0],
      ]);
      const out = new StepOutput();
      expect((await job.run(0, out)).exitCode).toBe(0);
      expect(out.of('stdout')).toBe('one\nextra\nhas-git\n');
    });

    it("fetches with the URL's credentials, shows them hidden, and with none fails as a retryable checkout_failure", async () => {
      authServer.makeRepo('private', [{ 'secret.txt': 'private\n' }]);
      const withCredentials = await open(runtime, {
        repository: { url: authServer.url('private', { host, user: 'deploy', password: 'pa55-word' }) },
        steps: [{ run: 'cat secret.txt' }],
      });
      expect(withCredentials.log.entries.find((e) => e.key === 'setup.git.add-remote')!.command.join(' ')).toContain(
        'deploy:***@',
      );
      expect(JSON.stringify(withCredentials.log.entries.map((e) => e.command))).not.toContain('pa55-word');
      const anonymous = await failureOf(
        open(runtime, { repository: { url: authServer.url('private', { host }) }, steps: [{ run: 'true' }] }),
      );
      expect(anonymous.reason).toBe('checkout_failure');
      expect(anonymous.message).toMatch(/setup\.git\.fetch failed/);
    });

    it("fetches with a password from the job's secrets, naming the secret in the log and never its value", async () => {
      authServer.makeRepo('private-by-secret', [{ 'secret.txt': 'by secret\n' }]);
      const withPassword = (password: string, run: string) =>
        open(
          runtime,
          {
            secrets: ['GIT_TOKEN'],
            repository: {
              url: authServer.url('private-by-secret', { host }),
              username: 'deploy',
              passwordSecret: 'GIT_TOKEN',
            },
            steps: [{ run }],
          },
          { secrets: { GIT_TOKEN: password } },
        );
      // A secret made from a file ends with a line break, which is not part of the password.
      const job = await withPassword('pa55-word\n', 'cat secret.txt');
      expect(job.log.text('setup.git.fetch')).toContain('password in secret GIT_TOKEN');
      expect(JSON.stringify(job.log.entries)).not.toContain('pa55-word');
      const out = new StepOutput();
      expect((await job.run(0, out)).exitCode).toBe(0);
      expect(out.of('stdout')).toBe('by secret\n');
      const wrong = await failureOf(withPassword('not-the-password', 'true'));
      expect(wrong.reason).toBe('checkout_failure');
    });

    it("fetches over ssh with the job's key from its secrets, checking the server against knownHosts", async () => {
      gitServer.makeRepo('ssh-by-key', [{ 'd.txt': 'over ssh\n' }]);
      const url = ssh.url(gitServer.path('ssh-by-key'), host);
      const job = await open(
        runtime,
        {
          secrets: ['DEPLOY_KEY'],
          repository: { url, sshKeySecret: 'DEPLOY_KEY', knownHosts: ssh.knownHosts(host) },
          steps: [{ run: 'cat d.txt' }],
        },
        { secrets: { DEPLOY_KEY: ssh.userKey } },
      );
      const out = new StepOutput();
      expect((await job.run(0, out)).exitCode).toBe(0);
      expect(out.of('stdout')).toBe('over ssh\n');
      // The same key, but the server's host key is not the one the job pinned: no fetch.
      const pinned = await failureOf(
        open(
          runtime,
          {
            secrets: ['DEPLOY_KEY'],
            repository: { url, sshKeySecret: 'DEPLOY_KEY', knownHosts: ssh.strangerKnownHosts(host) },
            steps: [{ run: 'true' }],
          },
          { secrets: { DEPLOY_KEY: ssh.userKey } },
        ),
      );
      expect(pinned.reason).toBe('checkout_failure');
    });

    it("never uses the executor's own git config or credential helpers", async () => {
      authServer.makeRepo('helper-bait', [{ 'a.txt': 'a' }]);
      // A git user whose global config answers any credential prompt: a checkout that read it would get in.
      const home = await tempDir('executor-home');
      await writeFile(
        path.join(home, '.gitconfig'),
        '[credential]\n\thelper = "!f() { echo username=deploy; echo password=pa55-word; }; f"\n',
      );
      const url = authServer.url('helper-bait', { host });
      expect((await git(['ls-remote', url], { HOME: home, GIT_TERMINAL_PROMPT: '0' })).code).toBe(0);
      const before = { HOME: process.env.HOME, XDG_CONFIG_HOME: process.env.XDG_CONFIG_HOME };
      process.env.HOME = home;
      process.env.XDG_CONFIG_HOME = home;
      try {
        const refused = await failureOf(open(runtime, { repository: { url }, steps: [{ run: 'true' }] }));
        expect(refused.reason).toBe('checkout_failure');
      } finally {
        for (const [key, value] of Object.entries(before)) {
          if (value === undefined) delete process.env[key];
          else process.env[key] = value;
        }
      }
    });

    it("never uses the executor's SSH agent or keys", async () => {
      gitServer.makeRepo('over-ssh', [{ 'b.txt': 'b' }]);
      const url = ssh.url(gitServer.path('over-ssh'), host);
      // The executor's agent holds a key the server accepts: with it, a plain git gets in.
      const control = await git(['ls-remote', ssh.url(gitServer.path('over-ssh'))], {
        SSH_AUTH_SOCK: ssh.agentSocket,
        GIT_SSH_COMMAND: 'ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null',
      });
      expect(control.code, control.stderr).toBe(0);
      const before = process.env.SSH_AUTH_SOCK;
      process.env.SSH_AUTH_SOCK = ssh.agentSocket;
      try {
        const job = openJob(runtime, { repository: { url }, steps: [{ run: 'true' }] });
        const refused = await failureOf(job);
        expect(refused.reason).toBe('checkout_failure');
      } finally {
        if (before === undefined) delete process.env.SSH_AUTH_SOCK;
        else process.env.SSH_AUTH_SOCK = before;
      }
    });

    it('refuses file:// repositories unless the executor allows them', async () => {
      gitServer.makeRepo('local', [{ 'c.txt': 'local repository\n' }]);
      const url = `file://${gitServer.path('local')}`;
      const refused = await failureOf(open(runtime, { repository: { url }, steps: [{ run: 'true' }] }));
      expect(refused.reason).toBe('repository_refused');
      expect(refused.message).toContain('EXECUTOR_ALLOW_LOCAL_REPOSITORIES=true');
      const allowing = await opts.make({ EXECUTOR_ALLOW_LOCAL_REPOSITORIES: 'true' });
      if (opts.platform?.noLocalRepositories) {
        try {
          const still = await failureOf(openJob(allowing, { repository: { url }, steps: [{ run: 'true' }] }));
          expect(still.reason).toBe('repository_refused');
        } finally {
          await allowing.close?.();
        }
        return;
      }
      try {
        const job = await openJob(allowing, { repository: { url }, steps: [{ run: 'cat c.txt' }] });
        const out = new StepOutput();
        expect((await job.run(0, out)).exitCode).toBe(0);
        expect(out.of('stdout')).toBe('local repository\n');
        await job.close();
      } finally {
        await allowing.close?.();
      }
    });

    it('refuses a step dir that leads out of the workspace through a symlink: invalid_workspace', async () => {
      const outside = await tempDir('outside-workspace');
      gitServer.makeRepo('escape', [{}], { symlinks: { out: outside } });
      const job = await open(runtime, {
        repository: { url: gitServer.url('escape', { host }) },
        steps: [{ dir: 'out/deeper', run: 'touch escaped' }],
      });
      const failed = await failureOf(job.run(0));
      expect(failed.reason).toBe('invalid_workspace');
      expect(failed.message).toBe('dir out/deeper leads outside the workspace through a symlink');
      const escaping = await failureOf(
        open(runtime, {
          repository: { url: gitServer.url('escape', { host }) },
          files: { 'out/pwned.txt': 'x' },
          steps: [],
        }),
      );
      expect(escaping.reason).toBe('invalid_workspace');
    });

    for (const { name: what, step, reason } of opts.startErrors) {
      it(`classifies a step that cannot start: ${what} → ${reason}`, async () => {
        const job = await open(runtime, { steps: [{ run: 'echo never', ...step() }] });
        expect((await failureOf(job.run(0))).reason).toBe(reason);
      });
    }

    it('reports a step killed for memory as out_of_memory, or says it enforces no memory limit', async () => {
      const limits = runtime.limits?.();
      if (!limits) return expect(limits).toBeUndefined();
      const job = await open(runtime, {
        resources: { memory: '32M' },
        steps: [{ run: 'head -c 200000000 /dev/zero | tail -c 150000000 > /dev/null; echo survived' }],
      });
      const out = new StepOutput();
      const result = await job.run(0, out);
      expect(result).toMatchObject({ exitCode: 137, failure: 'out_of_memory' });
      expect(out.of('stdout')).not.toContain('survived');
    });

    it('fails a job that fills its disk as out_of_disk, alone, or says it enforces no disk limit', async () => {
      const limits = runtime.limits?.();
      if (!limits?.diskBytes) return expect(limits?.diskBytes ?? 0).toBe(0);
      // Where the disk is watched rather than bounded, the step lives on until the watcher comes round.
      const lag = opts.platform?.diskFullAfterMs;
      const job = await open(runtime, {
        resources: { disk: '16M' },
        steps: [
          { run: `head -c 64000000 /dev/zero > big; ${lag ? `sleep ${Math.ceil(lag / 1000)}; ` : ''}echo survived` },
        ],
      });
      const out = new StepOutput();
      const result = await job.run(0, out);
      expect(result.failure).toBe('out_of_disk');
      expect(result.reason).toMatch(/the job's disk is full \(16Mi;/);
      expect(out.of('stdout')).not.toContain('survived');
      // Its neighbour, on the executor's default disk, writes what it likes.
      const neighbour = await open(runtime, { steps: [{ run: 'head -c 32000000 /dev/zero > big && echo fine' }] });
      const fine = new StepOutput();
      expect((await neighbour.run(0, fine)).exitCode).toBe(0);
      expect(fine.of('stdout')).toBe('fine\n');
    });

    it('removes what a crashed executor of its name left running, and nothing of another', async () => {
      const executorName = `contract-crash-${name.replace(/[^a-z0-9]/gi, '')}`;
      const crashed = await opts.make({ EXECUTOR_NAME: executorName });
      const other = await opts.make({ EXECUTOR_NAME: `${executorName}-other` });
      const job = await openJob(crashed, { files: { 'x.txt': 'x' }, steps: [{ run: 'echo started; sleep 300' }] });
      const neighbour = await openJob(other, { steps: [{ run: 'echo started; sleep 300' }] });
      const out = new StepOutput();
      const neighbourOut = new StepOutput();
      const running = job.run(0, out);
      const neighbourAbort = new AbortController();
      const neighbourRunning = neighbour.run(0, neighbourOut, neighbourAbort.signal);
      await until(
        'both steps run',
        () => out.of('stdout').includes('started') && neighbourOut.of('stdout').includes('started'),
      );
      const crashedLeft = await opts.leftovers(executorName);
      expect(crashedLeft).not.toEqual([]);
      // The executor dies without closing anything; its successor starts under the same name.
      const successor = await opts.make({ EXECUTOR_NAME: executorName });
      try {
        await successor.cleanupOrphans?.();
        expect((await running).exitCode).not.toBe(0);
        // What the successor holds now is its own (a disk made ready, say); nothing of its predecessor's is left
        // once what it deleted is gone (at once on an engine; after a pod's graceful termination on a cluster).
        const predecessors = async () =>
          (await opts.leftovers(executorName)).filter((left) => crashedLeft.includes(left));
        await until("the predecessor's leftovers are gone", async () => (await predecessors()).length === 0, 30_000);
        expect(await opts.leftovers(`${executorName}-other`)).not.toEqual([]);
      } finally {
        neighbourAbort.abort();
        await neighbourRunning;
        await neighbour.close();
        await Promise.all([successor.close?.(), other.close?.()]);
      }
      await until(
        'both executors left nothing',
        async () =>
          (await opts.leftovers(executorName)).length === 0 &&
          (await opts.leftovers(`${executorName}-other`)).length === 0,
        30_000,
      );
    });
  });
}
