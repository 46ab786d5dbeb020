// Docker helpers for tests: the docker CLI, the local test images (no registry on the internet here) and the build
// workers' image.
import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, open, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ROOT } from './root.js';

/**
 * Debian's static busybox on an empty rootfs; PATH=/bin, CMD /bin/sh, runs as root.
 * Quirk: its wget segfaults (exit 139) when given -T (its read timeout); bound it with `timeout 5 wget ...`.
 */
export const DOCKER_TEST_IMAGE = 'local/busybox:1';
/** The same rootfs plus /etc/passwd and /etc/group naming root and `app` (1000:1000, home /home/app). No USER set. */
export const DOCKER_TEST_USER_IMAGE = 'local/busybox-user:1';

const BUSYBOX = '/bin/busybox';

/** An executor on the docker runtime under `oci` (runc or runsc), running the busybox test image, 1 CPU and 256M per job. */
export function dockerExecutorEnv(oci: string): NodeJS.ProcessEnv {
  return {
    EXECUTOR_RUNTIME: 'docker',
    EXECUTOR_DOCKER_RUNTIME: oci,
    EXECUTOR_DOCKER_DEFAULT_IMAGE: DOCKER_TEST_IMAGE,
    EXECUTOR_JOB_NUM_CPUS: '1',
    EXECUTOR_JOB_MEMORY: '256M',
  };
}

export interface DockerResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the docker CLI; throws with its stderr on a non-zero exit unless `allowFail`. */
export function docker(
  args: string[],
  opts: { input?: string | Buffer; allowFail?: boolean } = {},
): Promise<DockerResult> {
  return new Promise((resolve, reject) => {
    const child = execFile('docker', args, { maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code === 'string') {
        // Not an exit status: the CLI could not be started at all (ENOENT and the like).
        reject(new Error(`docker ${args.join(' ')}: ${err.message} (run scripts/provision.sh as root)`));
        return;
      }
      // A CLI killed by a signal has no exit code: report it as a failure all the same.
      const code = err ? (typeof err.code === 'number' ? err.code : 128) : 0;
      if (code !== 0 && !opts.allowFail) {
        reject(new Error(`docker ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
        return;
      }
      resolve({ code, stdout, stderr });
    });
    // A CLI that exits before reading its input must not crash the test with EPIPE.
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input);
  });
}

/** Removes an image reference; a reference that does not exist is fine. */
export async function removeImage(ref: string, opts: { force?: boolean } = {}): Promise<void> {
  // A finished job's container is removed in the background; wait for it rather than fail on its reference.
  for (let tries = 0; ; tries++) {
    const r = await docker(['image', 'rm', ...(opts.force ? ['--force'] : []), ref], { allowFail: true });
    if (r.code === 0 || /no such image/i.test(r.stderr)) return;
    if (!/is using its referenced image/.test(r.stderr) || tries === 50)
      throw new Error(`docker image rm ${ref}: ${r.stderr.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Full ids of the containers carrying `label` (`key` or `key=value`), stopped ones included. */
export async function containersWithLabel(label: string): Promise<string[]> {
  const r = await docker(['ps', '--all', '--quiet', '--no-trunc', '--filter', `label=${label}`]);
  return r.stdout.split('\n').filter((line) => line !== '');
}

export async function imageExists(ref: string): Promise<boolean> {
  return (await docker(['image', 'inspect', ref], { allowFail: true })).code === 0;
}

async function assertDockerReachable(): Promise<void> {
  let detail: string;
  try {
    const r = await docker(['info', '--format', '{{.ServerVersion}}'], { allowFail: true });
    if (r.code === 0) return;
    detail = r.stderr.trim();
  } catch (e) {
    detail = (e as Error).message;
  }
  throw new Error(`Docker engine not reachable: run scripts/provision.sh as root (${detail})`);
}

/** Builds DOCKER_TEST_IMAGE and DOCKER_TEST_USER_IMAGE when the engine lacks them. Safe to call from parallel workers. */
export async function ensureTestImages(): Promise<void> {
  await assertDockerReachable();
  if ((await imageExists(DOCKER_TEST_IMAGE)) && (await imageExists(DOCKER_TEST_USER_IMAGE))) return;
  await withLock('dockhand-test-images', async () => {
    // Another process may have built them while this one waited for the lock.
    const haveBase = await imageExists(DOCKER_TEST_IMAGE);
    const haveUser = await imageExists(DOCKER_TEST_USER_IMAGE);
    if (haveBase && haveUser) return;
    await buildImages({ base: !haveBase, user: !haveUser });
  });
}

async function buildImages(which: { base: boolean; user: boolean }): Promise<void> {
  await assertStaticBusybox();
  const work = await mkdtemp(path.join(os.tmpdir(), 'dockhand-test-image-'));
  try {
    const rootfs = path.join(work, 'rootfs');
    for (const dir of ['bin', 'etc', 'root', 'tmp']) await mkdir(path.join(rootfs, dir), { recursive: true });
    await chmod(path.join(rootfs, 'tmp'), 0o1777);
    await chmod(path.join(rootfs, 'root'), 0o700);
    await copyFile(BUSYBOX, path.join(rootfs, 'bin/busybox'));
    await chmod(path.join(rootfs, 'bin/busybox'), 0o755);
    const applets = (await run('busybox', ['--list'])).split('\n').filter((a) => a !== '' && a !== 'busybox');
    for (const applet of applets) await symlink('busybox', path.join(rootfs, 'bin', applet));

    // Owners are set in the archive, so the files' owners on this machine (and who runs the tests) do not matter.
    const tar = (archive: string, owner: number, members: string[], append = false): Promise<string> =>
      run('tar', [
        '--numeric-owner',
        `--owner=${owner}`,
        `--group=${owner}`,
        '-C',
        rootfs,
        append ? '-rf' : '-cf',
        archive,
        ...members,
      ]);

    if (which.base) {
      await tar(path.join(work, 'base.tar'), 0, ['.']);
      await importImage(path.join(work, 'base.tar'), DOCKER_TEST_IMAGE);
    }
    if (which.user) {
      await writeFile(
        path.join(rootfs, 'etc/passwd'),
        'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n',
      );
      await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\napp:x:1000:\n');
      await mkdir(path.join(rootfs, 'home'));
      await tar(path.join(work, 'user.tar'), 0, ['.']);
      // The home directory belongs to app: appended after the root-owned rest.
      await mkdir(path.join(rootfs, 'home/app'));
      await tar(path.join(work, 'user.tar'), 1000, ['./home/app'], true);
      await importImage(path.join(work, 'user.tar'), DOCKER_TEST_USER_IMAGE);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Imports under a unique tag, then moves the real tag onto it in one step: nobody ever sees a half-made image. */
async function importImage(archive: string, ref: string): Promise<void> {
  const temp = `${ref.split(':')[0]}:building-${process.pid}-${Date.now()}`;
  await docker([
    'import',
    '--change',
    'ENV PATH=/bin',
    '--change',
    'CMD ["/bin/sh"]',
    '--message',
    'dockhand test image',
    archive,
    temp,
  ]);
  try {
    await docker(['tag', temp, ref]);
  } finally {
    await removeImage(temp);
  }
}

async function assertStaticBusybox(): Promise<void> {
  // A dynamic busybox would not run in an image without a libc.
  const r = await new Promise<string>((resolve) =>
    execFile('ldd', [BUSYBOX], { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve(err && typeof err.code === 'string' ? err.message : stdout + stderr),
    ),
  );
  if (!/not a dynamic executable|statically linked/.test(r)) {
    throw new Error(
      `${BUSYBOX} is missing or not static (${r.trim()}): run scripts/provision.sh as root (installs busybox-static)`,
    );
  }
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    ),
  );
}

/**
 * Runs `fn` while holding a lock file in the temp dir (created with O_EXCL), so parallel vitest workers
 * build the images once. A lock left by a process that died is taken over.
 */
async function withLock<T>(name: string, fn: () => Promise<T>, timeoutMs = 180_000): Promise<T> {
  const file = path.join(os.tmpdir(), `${name}.lock`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const handle = await open(file, 'wx');
      await handle.writeFile(String(process.pid));
      await handle.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (await lockIsStale(file)) {
      await rm(file, { force: true });
      continue;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for the lock ${file}; remove it if no test run is building images`);
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    return await fn();
  } finally {
    await rm(file, { force: true });
  }
}

async function lockIsStale(file: string): Promise<boolean> {
  const pid = Number(await readFile(file, 'utf8').catch(() => ''));
  if (!pid) {
    // Just created and not yet written, or written by something odd: stale only if old.
    const mtime = await stat(file).then(
      (s) => s.mtimeMs,
      () => Date.now(),
    );
    return Date.now() - mtime > 10_000;
  }
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * An image with git, ssh and every busybox applet: the setup image the kubernetes runtime's tests give their pods
 * (made from the docker runtime's checkout helper, which is made from this host's git).
 */
export const DOCKER_TEST_GIT_IMAGE = 'local/git:1';

export async function ensureGitTestImage(): Promise<void> {
  await ensureTestImages();
  if (await imageExists(DOCKER_TEST_GIT_IMAGE)) return;
  await withLock('dockhand-test-git-image', async () => {
    if (await imageExists(DOCKER_TEST_GIT_IMAGE)) return;
    const { default: Docker } = await import('dockerode');
    const { makeHelperImage } = await import('../../src/executor/runtimes/docker/checkoutHelper.js');
    const { DEFAULT_HELPER_IMAGE } = await import('../../src/executor/runtimes/docker/options.js');
    if (!(await imageExists(DEFAULT_HELPER_IMAGE))) await makeHelperImage(new Docker(), DEFAULT_HELPER_IMAGE);
    const dockerfile = `FROM ${DEFAULT_HELPER_IMAGE}\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n`;
    await docker(['build', '--quiet', '-t', DOCKER_TEST_GIT_IMAGE, '-'], { input: dockerfile });
  });
}

/** The build workers' image as the tests make it: this checkout's dist/ on the cached base (never the release's tag). */
export const BUILD_WORKER_TEST_IMAGE = 'dockhand/build-worker:test';

const BUILD_WORKER_STAMP = path.join(os.tmpdir(), 'dockhand-build-worker-image.run');
let buildWorkerImage: Promise<string> | undefined;

/**
 * Makes BUILD_WORKER_TEST_IMAGE with scripts/build-worker-image.sh once per test run and returns its reference.
 * The script reuses its cached base (Debian with buildah: made once per machine, as root, in about 2 minutes, so give
 * the calling hook a long timeout) and its node_modules layer; the dist/ layer follows this checkout's dist/, so
 * run `npm run build` first. Safe to call from parallel workers: one of them runs the script, the others wait.
 */
export async function ensureBuildWorkerImage(): Promise<string> {
  buildWorkerImage ??= makeBuildWorkerImage().catch((e: unknown) => {
    buildWorkerImage = undefined; // a later call tries again
    throw e;
  });
  return buildWorkerImage;
}

async function makeBuildWorkerImage(): Promise<string> {
  await assertDockerReachable();
  const run = await testRunId();
  return withLock(
    'dockhand-build-worker-image',
    async () => {
      // Another worker of this run may have made it while this one waited for the lock.
      const done = await readFile(BUILD_WORKER_STAMP, 'utf8').catch(() => '');
      if (done === run && (await imageExists(BUILD_WORKER_TEST_IMAGE))) return BUILD_WORKER_TEST_IMAGE;
      const tag = BUILD_WORKER_TEST_IMAGE.split(':')[1];
      const out = await new Promise<string>((resolve, reject) =>
        execFile(
          'bash',
          [path.join(ROOT, 'scripts/build-worker-image.sh'), tag],
          { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, timeout: 15 * 60_000 },
          (err, stdout, stderr) =>
            err
              ? reject(new Error(`scripts/build-worker-image.sh ${tag} failed: ${stderr.trim() || err.message}`))
              : resolve(stdout.trim()),
        ),
      );
      if (out !== BUILD_WORKER_TEST_IMAGE)
        throw new Error(`scripts/build-worker-image.sh ${tag} made ${out}, not ${BUILD_WORKER_TEST_IMAGE}`);
      await writeFile(BUILD_WORKER_STAMP, run);
      return BUILD_WORKER_TEST_IMAGE;
    },
    20 * 60_000,
  );
}

/**
 * Names this test run: vitest's main process (the parent of every worker it forks) and the time it started, so a
 * later run whose process gets the same pid is still another run.
 */
async function testRunId(): Promise<string> {
  const stat = await readFile(`/proc/${process.ppid}/stat`, 'utf8').catch(() => '');
  // Field 22, counted after the command name's closing parenthesis (the name may hold spaces).
  const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  return `${process.ppid}-${startTime}`;
}
