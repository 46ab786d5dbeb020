// The docker runtime: every step in a fresh container from its image, on the Docker Engine API (DOCKER_HOST or
// the default socket). A job's session owns its workspace, on a size-limited disk of its own (jobDisks.ts),
// bind-mounted at /data; the repository is checked out in a helper container on the job's network
// (checkoutHelper.ts); output streams live over attach; limits come from EXECUTOR_JOB_NUM_CPUS / _MEMORY / _DISK;
// every container is labelled so the janitor can remove orphans.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import { secretsOf } from '../../../core/dockerAuthConfig.js';
import type { JobLimits } from '../../../core/resources.js';
import { BackgroundWork } from '../../background.js';
import type { Stream } from '../../jobLog.js';
import { KILL_GRACE_MS } from '../../process.js';
import {
  createHostDirs,
  executorRoot,
  prepareHostWorkspace,
  removeHostDirs,
  stepScriptPath,
  stepWorkdir,
  writeStepScript,
  type HostDirs,
} from '../../workspace/hostWorkspace.js';
import { OwnedDirs } from '../../workspace/ownedDirs.js';
import {
  type CheckResult,
  JobFailure,
  type JobSession,
  type JobView,
  type PrepareContext,
  type Runtime,
  RuntimeSetupError,
  type StepIO,
  type StepResult,
  type StepRun,
} from '../runtime.js';
import type { RuntimeSettings } from '../settings.js';
import { CheckoutHelper, helperName, makeHelperImage } from './checkoutHelper.js';
import {
  CONTAINER_WORKSPACE,
  LABEL_EXECUTOR,
  NETWORK_NAME,
  containerOptions,
  describeContainer,
  type StepContainer,
} from './containerSpec.js';
import { ImagePuller } from './imagePuller.js';
import { JOB_DISK_FIX, JobDisks, type JobDisk } from './jobDisks.js';
import { NetworkSetupError, blockMetadata, ensureNetwork, metadataBlocked } from './network.js';
import { DEFAULT_HELPER_IMAGE, type DockerOptions } from './options.js';
import { chooseCredential } from './registryAuth.js';
import { makeAccessible } from './workspaceOwner.js';

type Settings = Pick<
  RuntimeSettings,
  | 'executorName'
  | 'jobCpus'
  | 'jobMemoryBytes'
  | 'jobDiskBytes'
  | 'keepWorkspaces'
  | 'workspaceRoot'
  | 'cleanupIntervalMs'
  | 'allowLocalRepositories'
>;

/** How long to wait for the engine at start before saying it is not there. */
const CONNECT_TIMEOUT_MS = 5_000;
/** After a container exits, its attach stream normally ends at once; never wait on it longer than this. */
const OUTPUT_DRAIN_MS = 2_000;

/** The engine is missing or not set up for jobs (a runtime setup error, said with its fix). */
export class DockerSetupError extends RuntimeSetupError {}

interface EngineInfo {
  version: string;
  apiVersion: string;
  cpus: number;
  runtimes: string[];
  /** The arguments dockerd passes each runtime (daemon.json "runtimeArgs"). */
  runtimeArgs: Record<string, string[]>;
  defaultRuntime: string;
}

export class DockerRuntime implements Runtime {
  readonly name = 'docker';
  readonly puller: ImagePuller;
  /** Names of containers this process is running: the janitor never touches them. */
  private readonly inUse = new Set<string>();
  private readonly background = new BackgroundWork();
  /** Plain job directories (EXECUTOR_JOB_DISK=0) of this process's sessions. */
  readonly plainDirs = new OwnedDirs();
  private janitor?: NodeJS.Timeout;
  private readonly jobLimits: JobLimits;
  /** What steps get: the dockhand bridge, or none (set so, or the OCI runtime has no network of its own anyway). */
  readonly stepNetwork: 'bridge' | 'none';
  /** Each job's workspace on a disk of its own; absent with EXECUTOR_JOB_DISK=0. */
  readonly disks?: JobDisks;
  private helperImage?: Promise<void>;

  private constructor(
    readonly docker: Docker,
    readonly settings: Settings,
    readonly options: DockerOptions,
    private readonly engine: EngineInfo,
    readonly log: Logger,
  ) {
    this.puller = new ImagePuller(docker);
    this.stepNetwork = networkFor(options, engine);
    // The engine refuses --cpus above the host's CPU count; a larger setting means "all of them".
    const cpus = settings.jobCpus > engine.cpus ? engine.cpus : settings.jobCpus;
    if (cpus !== settings.jobCpus)
      log.warn(
        { configured: settings.jobCpus, host: engine.cpus },
        "EXECUTOR_JOB_NUM_CPUS is above the host's CPU count; using the host's",
      );
    this.jobLimits = { cpus, memoryBytes: settings.jobMemoryBytes, diskBytes: settings.jobDiskBytes };
    if (settings.jobDiskBytes > 0)
      this.disks = new JobDisks(settings.workspaceRoot, settings.executorName, settings.jobDiskBytes, log);
  }

  /** Connects to the engine and checks what jobs depend on; throws a DockerSetupError saying what to fix. */
  static async connect(settings: Settings, options: DockerOptions, log: Logger): Promise<DockerRuntime> {
    const docker = new Docker();
    const engine = await engineInfo(docker);
    const oci = options.ociRuntime;
    if (oci && !engine.runtimes.includes(oci)) {
      throw new DockerSetupError(
        `EXECUTOR_DOCKER_RUNTIME=${oci} is not a runtime this Docker engine knows (it has: ${engine.runtimes.join(', ')})`,
        oci === 'runsc'
          ? 'register gVisor in /etc/docker/daemon.json as {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}} and restart dockerd'
          : `register ${oci} in /etc/docker/daemon.json under "runtimes" and restart dockerd`,
      );
    }
    // The checkout helper fetches on the bridge even when the steps' OCI runtime has no network of its own.
    if (options.network === 'bridge') {
      await ensureNetwork(docker);
      try {
        await blockMetadata();
      } catch (err) {
        if (err instanceof NetworkSetupError) throw new DockerSetupError(err.message, err.fix);
        throw err;
      }
    }
    const runtime = new DockerRuntime(docker, settings, options, engine, log);
    if (runtime.disks) {
      const disks = await runtime.disks.check();
      if (!disks.ok) throw new DockerSetupError(`cannot give jobs a disk of their own: ${disks.detail}`, JOB_DISK_FIX);
    }
    return runtime;
  }

  async version(): Promise<string | undefined> {
    const oci = this.options.ociRuntime || this.engine.defaultRuntime;
    return `Docker ${this.engine.version} (${oci})`;
  }

  limits(): JobLimits {
    return this.jobLimits;
  }

  secrets(): string[] {
    return secretsOf(this.options.authConfig);
  }

  async open(job: JobView): Promise<JobSession> {
    let disk: JobDisk | undefined;
    let dirs: HostDirs;
    try {
      // job.limits.diskBytes is the job's request, else EXECUTOR_JOB_DISK; 0 only when the executor sets no bound.
      if (this.disks && job.limits.diskBytes > 0) {
        disk = await this.disks.take(job.limits.diskBytes);
        dirs = disk.dirs;
      } else {
        dirs = await this.plainDirs.make(
          async () =>
            createHostDirs(
              await executorRoot(this.settings.workspaceRoot, this.settings.executorName),
              `job-${job.id}-`,
            ),
          (d) => d.root,
        );
      }
    } catch (err) {
      throw new JobFailure('runtime_unavailable', `cannot make the job's workspace: ${(err as Error).message}`);
    }
    return new DockerSession(this, job, dirs, disk);
  }

  /** Removes containers labelled with this executor's name that no running job of this process owns, and its spent disks. */
  async cleanupOrphans(): Promise<void> {
    const containers = await this.docker.listContainers({
      all: true,
      filters: JSON.stringify({ label: [`${LABEL_EXECUTOR}=${this.settings.executorName}`] }),
    });
    const orphans = containers.filter(
      (c) =>
        !c.Names.some((n) => this.inUse.has(n.replace(/^\//, ''))) &&
        // Kept for debugging (EXECUTOR_KEEP_WORKSPACES): stopped step containers stay; running leftovers still go.
        (!this.settings.keepWorkspaces || c.State === 'running'),
    );
    for (const orphan of orphans) {
      await this.docker
        .getContainer(orphan.Id)
        .remove({ force: true })
        .catch((err: Error) => {
          if ((err as { statusCode?: number }).statusCode !== 404)
            this.log.warn({ container: orphan.Id, err: err.message }, 'could not remove an orphaned container');
        });
    }
    if (orphans.length) this.log.info({ removed: orphans.map((o) => o.Names[0]) }, 'removed orphaned containers');
    const disks = (await this.disks?.cleanupOrphans(this.settings.keepWorkspaces)) ?? [];
    if (!this.settings.keepWorkspaces) {
      const root = await executorRoot(this.settings.workspaceRoot, this.settings.executorName);
      for (const name of await readdir(root)) {
        const dir = path.join(root, name);
        if (!name.startsWith('job-') || this.plainDirs.spares(dir)) continue;
        try {
          await rm(dir, { recursive: true, force: true, maxRetries: 3 });
          disks.push(dir);
        } catch (err) {
          this.log.warn(
            { dir, err: (err as Error).message },
            'could not remove an orphaned job directory; the janitor will try again',
          );
        }
      }
    }
    if (disks.length) this.log.info({ removed: disks }, 'removed orphaned job workspaces');
    // The first ready disk is made here, once the name is this process's (a refused second process makes none).
    this.disks?.prepare();
    this.startJanitor();
  }

  async check(): Promise<CheckResult[]> {
    const results: CheckResult[] = [];
    const host = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
    results.push({
      name: 'engine',
      ok: true,
      detail: `Docker ${this.engine.version} (API ${this.engine.apiVersion}) at ${host}, ${this.engine.cpus} CPUs`,
    });
    const oci = this.options.ociRuntime || this.engine.defaultRuntime;
    results.push({
      name: 'OCI runtime',
      ok: true,
      detail: `${oci} is registered (engine runtimes: ${this.engine.runtimes.join(', ')})`,
    });
    if (this.options.network === 'none')
      results.push({
        name: 'network',
        ok: true,
        detail: 'EXECUTOR_DOCKER_NETWORK=none: steps and checkouts have no network at all',
      });
    else {
      if (this.stepNetwork === 'none')
        results.push({
          name: 'network',
          ok: true,
          detail: `${oci} runs with --network=none: steps have only loopback`,
        });
      const blocked = await metadataBlocked();
      results.push({
        name: 'metadata block',
        ok: blocked.ok,
        detail: blocked.detail,
        fix: blocked.ok
          ? undefined
          : 'restart the executor as root (it installs the rules), or set EXECUTOR_DOCKER_NETWORK=none',
      });
    }
    results.push(
      this.disks
        ? await this.disks.check()
        : {
            name: 'job disks',
            ok: true,
            detail:
              "EXECUTOR_JOB_DISK=0: workspaces are plain directories, unbounded (one job can fill the host's disk)",
          },
    );
    results.push(await this.helperCheck());
    results.push(await this.probeContainer(oci));
    return results;
  }

  async close(): Promise<void> {
    clearInterval(this.janitor);
    await this.background.settle();
    await this.disks?.close();
  }

  /** The checkout helper's image, made or pulled once per process when the engine lacks it. */
  ensureHelperImage(note: (line: string) => void, signal: AbortSignal): Promise<void> {
    const image = this.options.helperImage;
    if (image !== DEFAULT_HELPER_IMAGE) {
      return this.puller.ensure(
        image,
        () => chooseCredential(image, { executor: this.options.authConfig }),
        note,
        signal,
      );
    }
    this.helperImage ??= (async () => {
      if (await this.puller.present(image)) return;
      this.log.info({ image }, "making the checkout helper image from this host's git");
      await makeHelperImage(this.docker, image);
    })();
    this.helperImage.catch(() => (this.helperImage = undefined));
    return this.helperImage.catch((err: Error) => {
      throw new JobFailure(
        'runtime_unavailable',
        `${err.message}; or set EXECUTOR_DOCKER_HELPER_IMAGE to an image with git, sh and sleep`,
      );
    });
  }

  /** The helper's OCI runtime: the configured one, unless it has no network of its own (gVisor here), then the engine's default. */
  helperOciRuntime(): string {
    return this.options.network === 'bridge' && this.stepNetwork === 'none' ? '' : this.options.ociRuntime;
  }

  stepContainer(job: JobView, run: StepRun, dirs: HostDirs, name: string): StepContainer {
    return {
      name,
      image: run.step.image ?? this.options.defaultImage,
      executorName: this.settings.executorName,
      jobId: job.id,
      attempt: job.attempt,
      stepKey: run.step.key,
      workspace: dirs.workspace,
      scripts: dirs.scripts,
      scriptName: path.basename(stepScriptPath(dirs, run.index)),
      dir: path.posix.normalize(run.step.dir ?? '.'),
      env: { DOCKHAND_WORKSPACE: CONTAINER_WORKSPACE, ...run.env },
      user: run.step.user,
      limits: job.limits,
      pidsLimit: this.options.pidsLimit,
      network: job.spec.network === 'none' || this.stepNetwork === 'none' ? 'none' : NETWORK_NAME,
      ociRuntime: this.options.ociRuntime,
    };
  }

  /** Creates, attaches to, starts and waits for one container; stops it within 2 s when `signal` aborts. */
  async runContainer(spec: StepContainer, sink: OutputSink, signal: AbortSignal): Promise<StepResult> {
    if (signal.aborted) return { exitCode: 130, reason: 'stopped before the container started' };
    this.inUse.add(spec.name);
    let container: Docker.Container | undefined;
    try {
      container = await this.docker.createContainer(containerOptions(spec)).catch((err: Error) => {
        throw engineError('cannot create the step container', err);
      });
      // Attach before start, so not a byte of output is missed.
      const stream = (await container.attach({ stream: true, stdout: true, stderr: true })) as NodeJS.ReadableStream;
      const drained = new Promise<void>((resolve) => {
        stream.once('end', resolve);
        stream.once('close', resolve);
        stream.once('error', () => resolve());
      });
      // Backpressure: while the job's log is full the attach stream is paused (demuxStream reads it by 'data'
      // events), the engine stops reading the container's output and the step blocks on its writes. A stopped
      // step's stream is read on regardless, so it can end.
      let paused = false;
      let lastOutput = Date.now();
      const readOn = (): void => {
        paused = false;
        stream.resume();
      };
      const output = (which: Stream, text: string): void => {
        lastOutput = Date.now();
        if (sink.output(which, text) !== false || !sink.writable || paused || signal.aborted) return;
        paused = true;
        stream.pause();
        void sink.writable().then(() => {
          if (paused) readOn();
        });
      };
      signal.addEventListener('abort', readOn, { once: true });
      this.docker.modem.demuxStream(stream, textSink('stdout', output), textSink('stderr', output));
      const created = container;
      // docker stop: SIGTERM to the step (through the init), SIGKILL after the grace period.
      const onAbort = (): void => void created.stop({ t: Math.ceil(KILL_GRACE_MS / 1000) }).catch(() => undefined);
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        if (signal.aborted) return { exitCode: 130, reason: 'stopped before the container started' };
        await container.start().catch((err: Error) => {
          throw engineError('cannot start the step container', err);
        });
        // A stop sent while the engine was still starting the container has no effect: send it again.
        if (signal.aborted) onAbort();
        // A container removed under the step (by a janitor after this executor was taken for dead) is a killed step.
        const { StatusCode } = (await container.wait().catch((err: { statusCode?: number }) => {
          if (err.statusCode === 404) return { StatusCode: 137 };
          throw err;
        })) as { StatusCode: number };
        // Output held back for the log is still to come: the drain time counts from the last output taken, and
        // not while the stream is paused.
        lastOutput = Date.now();
        while (!(await Promise.race([drained.then(() => true), sleep(OUTPUT_DRAIN_MS / 4).then(() => false)]))) {
          if (!paused && Date.now() - lastOutput >= OUTPUT_DRAIN_MS) break;
        }
        (stream as unknown as { destroy?(): void }).destroy?.();
        // The OOM killer's SIGKILL makes 137; only then is it worth asking the engine why. A step stopped for its
        // abort (cancel, timeout) got our own SIGKILL: asking would only delay its stop.
        if (StatusCode === 137 && !signal.aborted && (await oomKilled(container)))
          return { exitCode: StatusCode, reason: 'killed: out of memory', failure: 'out_of_memory' };
        return { exitCode: StatusCode };
      } finally {
        signal.removeEventListener('abort', onAbort);
        signal.removeEventListener('abort', readOn);
      }
    } finally {
      if (container && !this.settings.keepWorkspaces) this.removeLater(container, spec.name);
      else this.inUse.delete(spec.name);
    }
  }

  /** Work off the job's critical path (removals); close() waits for it. */
  later(what: string, task: () => Promise<void>): void {
    this.background.run(task, (err) => this.log.warn({ err: err.message }, `could not remove ${what}`));
  }

  /** Marks a container name as this process's own while it exists, so the janitor leaves it alone. */
  holding(name: string, held: boolean): void {
    if (held) this.inUse.add(name);
    else this.inUse.delete(name);
  }

  /** Removal is off the step's critical path; the janitor catches any that fail. */
  private removeLater(container: Docker.Container, name: string): void {
    this.later(`step container ${name}`, () =>
      container
        .remove({ force: true })
        .catch((err: Error) => {
          if ((err as { statusCode?: number }).statusCode !== 404) throw err;
        })
        .finally(() => this.inUse.delete(name)),
    );
  }

  private startJanitor(): void {
    if (this.janitor) return;
    this.janitor = setInterval(() => void this.janitorRound(), this.settings.cleanupIntervalMs);
    this.janitor.unref();
  }

  private async janitorRound(): Promise<void> {
    try {
      await this.cleanupOrphans();
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'janitor round: cleanup failed');
    }
    // Apart from the cleanup: whatever that met, the metadata block must be repaired.
    try {
      // dockerd restarts and firewall reloads can drop the metadata rules: put them back.
      if (this.options.network === 'bridge' && !(await metadataBlocked()).ok) {
        this.log.warn('the metadata-blocking iptables rules were missing; reinstalling them');
        await blockMetadata();
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'janitor round: could not check or reinstall the metadata block');
    }
  }

  private async helperCheck(): Promise<CheckResult> {
    const name = 'checkout helper';
    const image = this.options.helperImage;
    try {
      if (await this.puller.present(image)) return { name, ok: true, detail: `checkouts run in ${image}` };
      if (image !== DEFAULT_HELPER_IMAGE)
        return { name, ok: true, detail: `${image} will be pulled for the first checkout` };
      await this.ensureHelperImage(() => undefined, AbortSignal.timeout(120_000));
      return { name, ok: true, detail: `made ${image} from this host's git; checkouts run in it` };
    } catch (err) {
      return {
        name,
        ok: false,
        detail: (err as Error).message,
        fix: 'install git and busybox-static on this host, or set EXECUTOR_DOCKER_HELPER_IMAGE to an image with git, sh and sleep',
      };
    }
  }

  /** Runs `echo ok` in a tiny container made exactly like a step's, under the configured OCI runtime. */
  private async probeContainer(oci: string): Promise<CheckResult> {
    const name = 'test container';
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-check-'));
    try {
      await writeFile(path.join(dir, 'check.sh'), 'echo ok\n', { mode: 0o755 });
      const image = this.options.defaultImage;
      await this.puller.ensure(
        image,
        () => chooseCredential(image, { executor: this.options.authConfig }),
        () => undefined,
        AbortSignal.timeout(120_000),
      );
      let out = '';
      const result = await this.runContainer(
        {
          name: `dockhand-check-${randomBytes(3).toString('hex')}`,
          image,
          executorName: this.settings.executorName,
          jobId: 0,
          attempt: 0,
          stepKey: 'check',
          workspace: dir,
          scripts: dir,
          scriptName: 'check.sh',
          dir: '.',
          env: {},
          limits: this.jobLimits,
          pidsLimit: this.options.pidsLimit,
          network: this.stepNetwork === 'none' ? 'none' : NETWORK_NAME,
          ociRuntime: this.options.ociRuntime,
        },
        {
          output: (_stream, text) => {
            out += text;
          },
        },
        AbortSignal.timeout(60_000),
      );
      const ok = result.exitCode === 0 && out.trim() === 'ok';
      return {
        name,
        ok,
        detail: ok
          ? `a step container ran under ${oci} from ${image}`
          : `the ${image} container under ${oci} exited ${result.exitCode}: ${out.trim().slice(0, 500)}`,
        fix: ok ? undefined : `check that ${oci} works: docker run --rm --runtime ${oci} ${image} echo ok`,
      };
    } catch (err) {
      return {
        name,
        ok: false,
        detail: (err as Error).message,
        fix: `make the image available (docker pull ${this.options.defaultImage}) or set EXECUTOR_DOCKER_DEFAULT_IMAGE to one the engine has`,
      };
    } finally {
      await this.background.settle();
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/** One job attempt on the docker runtime: its workspace (on its own disk), the checkout helper, its step containers. */
class DockerSession implements JobSession {
  /** The checkout helper's removal: the disk is reused or removed only once nothing of the job holds it. */
  private helperGone: Promise<unknown> = Promise.resolve();

  /** Step users the workspace was opened up for: a repository is walked once per job and user (a reused disk is another job). */
  private readonly openedFor = new Set<string>();

  constructor(
    private readonly runtime: DockerRuntime,
    private readonly job: JobView,
    private readonly dirs: HostDirs,
    private readonly disk: JobDisk | undefined,
  ) {}

  async prepare(ctx: PrepareContext): Promise<void> {
    const { spec } = this.job;
    if (!spec.repository && !spec.files) return;
    let helper: CheckoutHelper | undefined;
    let helperName_: string | undefined;
    const startHelper = async (): Promise<CheckoutHelper> => {
      const { runtime } = this;
      if (runtime.options.network === 'none' && !/^file:/i.test(spec.repository!.url)) {
        throw new JobFailure(
          'repository_refused',
          'this executor gives jobs no network (EXECUTOR_DOCKER_NETWORK=none), so it cannot fetch the repository',
        );
      }
      await runtime.ensureHelperImage(() => undefined, ctx.signal);
      helperName_ = helperName(this.job.id, this.job.attempt);
      runtime.holding(helperName_, true);
      return CheckoutHelper.start(
        runtime.docker,
        {
          name: helperName_,
          image: runtime.options.helperImage,
          executorName: runtime.settings.executorName,
          jobId: this.job.id,
          attempt: this.job.attempt,
          workspace: this.dirs.workspace,
          network: runtime.options.network === 'bridge' ? NETWORK_NAME : 'none',
          ociRuntime: runtime.helperOciRuntime(),
          memoryBytes: this.job.limits.memoryBytes,
          pidsLimit: runtime.options.pidsLimit,
          localRepositories: runtime.settings.allowLocalRepositories ? localRepositoryDirs(spec.repository!.url) : [],
        },
        { allowLocal: runtime.settings.allowLocalRepositories, repository: spec.repository, secrets: this.job.secrets },
      );
    };
    try {
      await prepareHostWorkspace(
        spec,
        this.dirs,
        (dir) => async (args, io) => {
          helper ??= await startHelper();
          return helper.git(path.relative(this.dirs.workspace, dir) || '.')(args, io);
        },
        { ...ctx, allowLocalRepositories: this.runtime.settings.allowLocalRepositories },
      );
    } catch (err) {
      if (this.disk && (await this.runtime.disks!.isFull(this.disk))) throw this.runtime.disks!.full(this.disk);
      throw err;
    } finally {
      if (helper) {
        const done = helper;
        const name = helperName_!;
        const removal = done.remove().finally(() => this.runtime.holding(name, false));
        this.helperGone = removal.catch(() => undefined);
        this.runtime.later(`checkout helper ${name}`, () => removal);
      } else if (helperName_) this.runtime.holding(helperName_, false);
    }
  }

  describeStep(run: StepRun): string[] {
    return describeContainer(this.runtime.stepContainer(this.job, run, this.dirs, 'NAME'));
  }

  async runStep(run: StepRun, io: StepIO): Promise<StepResult> {
    const { runtime, job } = this;
    await stepWorkdir(this.dirs, run.step.dir);
    await writeStepScript(this.dirs, run.index, run.step.run);
    const spec = runtime.stepContainer(
      job,
      run,
      this.dirs,
      `dockhand-${job.id}-${job.attempt}-${run.index + 1}-${randomBytes(3).toString('hex')}`,
    );
    const credential = () =>
      chooseCredential(spec.image, { job: job.dockerAuthConfig, executor: runtime.options.authConfig });
    await runtime.puller.ensure(spec.image, credential, io.note, io.signal);
    if (run.step.user && !this.openedFor.has(run.step.user)) {
      await makeAccessible(this.dirs.workspace, run.step.user);
      this.openedFor.add(run.step.user);
    }
    const result = await runtime.runContainer(spec, { output: io.output, writable: io.outputWritable }, io.signal);
    if (result.exitCode !== 0 && !result.failure && this.disk && (await runtime.disks!.isFull(this.disk))) {
      return { ...result, reason: runtime.disks!.full(this.disk).message, failure: 'out_of_disk' };
    }
    return result;
  }

  async close(): Promise<void> {
    if (this.disk) this.runtime.disks!.release(this.disk, this.runtime.settings.keepWorkspaces, this.helperGone);
    else if (this.runtime.settings.keepWorkspaces) this.runtime.plainDirs.release(this.dirs.root);
    else
      this.runtime.later(`job directory ${this.dirs.root}`, () =>
        removeHostDirs(this.dirs).finally(() => this.runtime.plainDirs.release(this.dirs.root)),
      );
  }
}

/** The directory a file:// repository lives in, for the helper to see (read-only); nothing for other URLs. */
function localRepositoryDirs(url: string): string[] {
  if (!/^file:/i.test(url)) return [];
  try {
    return [decodeURIComponent(new URL(url).pathname)];
  } catch {
    return [];
  }
}

/**
 * gVisor registered with "--network=none" (which machines like ours need) gives its sandbox only loopback whatever
 * Docker attaches: a Docker network would cost a network setup per container (~60 ms) and buy nothing.
 */
function networkFor(options: DockerOptions, engine: EngineInfo): 'bridge' | 'none' {
  if (options.network === 'none') return 'none';
  const args = engine.runtimeArgs[options.ociRuntime || engine.defaultRuntime] ?? [];
  const networkless = args.some(
    (arg, i) => arg === '--network=none' || (arg === '--network' && args[i + 1] === 'none'),
  );
  return networkless ? 'none' : 'bridge';
}

async function engineInfo(docker: Docker): Promise<EngineInfo> {
  const where = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
  try {
    await Promise.race([
      docker.ping(),
      // Unreferenced: a timer that lost the race must not keep the process alive.
      sleep(CONNECT_TIMEOUT_MS, undefined, { ref: false }).then(() => {
        throw new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000}s`);
      }),
    ]);
    const [info, version] = await Promise.all([docker.info(), docker.version()]);
    const runtimes = (info.Runtimes as Record<string, { runtimeArgs?: string[] }> | undefined) ?? {};
    return {
      version: version.Version,
      apiVersion: version.ApiVersion,
      cpus: info.NCPU as number,
      runtimes: Object.keys(runtimes),
      runtimeArgs: Object.fromEntries(Object.entries(runtimes).map(([name, r]) => [name, r.runtimeArgs ?? []])),
      defaultRuntime: (info.DefaultRuntime as string) ?? 'runc',
    };
  } catch (err) {
    throw new DockerSetupError(
      `the Docker engine at ${where} is not reachable: ${(err as Error).message}`,
      'start dockerd (Debian: apt-get install docker.io, then dockerd &), or point DOCKER_HOST at a running engine',
    );
  }
}

/** Engine refusals caused by the step itself (a user missing from the image, a bad working directory) are final. */
function engineError(what: string, err: Error): JobFailure {
  const message = (err as { json?: { message?: string } }).json?.message ?? err.message;
  const jobsFault =
    /unable to find user|no matching entries in passwd|not a directory|no such file or directory|executable file not found|invalid/i.test(
      message,
    );
  return new JobFailure(jobsFault ? 'invalid_step' : 'runtime_unavailable', `${what}: ${message}`);
}

/**
 * Whether the engine says the container was killed for memory. It learns so from an event that can arrive just after
 * the exit (seen under gVisor on a busy machine), so a "no" is asked again for a short while.
 */
async function oomKilled(container: Docker.Container): Promise<boolean> {
  for (let tries = 1; ; tries++) {
    const state = await container.inspect().then(
      (c) => c.State,
      () => undefined,
    );
    if (!state) return false;
    if (state.OOMKilled) return true;
    if (tries === OOM_TRIES) return false;
    await sleep(OOM_RETRY_MS);
  }
}

// Up to 5 s: 0.6 s, then 2 s, were seen to miss the event (runc, then gVisor) with the test suite's containers on
// 2 CPUs. A real OOM ends the wait as soon as the engine knows; only a step that exits 137 for another reason (a
// SIGKILL of its own, not an abort) waits it out.
const OOM_TRIES = 50;
const OOM_RETRY_MS = 100;

/** Where a container's output goes; `writable`, when given, is waited for after `output` returned false. */
interface OutputSink {
  output(stream: Stream, text: string): boolean | void;
  writable?(): Promise<void>;
}

/** Decodes one stream of the container's output as UTF-8, never splitting a character across writes. */
function textSink(stream: Stream, output: (stream: Stream, text: string) => void): Writable {
  const decoder = new StringDecoder('utf8');
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      const text = decoder.write(chunk);
      if (text) output(stream, text);
      done();
    },
    final(done) {
      const rest = decoder.end();
      if (rest) output(stream, rest);
      done();
    },
  });
}
