// The docker runtime: every step in a fresh container from its image, on the Docker Engine API (DOCKER_HOST or
// the default socket). The workspace is bind-mounted at /data, output streams live over attach, limits come from
// EXECUTOR_JOB_NUM_CPUS / EXECUTOR_JOB_MEMORY, and every container is labelled so the janitor can remove orphans.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import type { JobLimits } from '../../../core/resources.js';
import type { ExecutorConfig } from '../../config.js';
import type { Stream } from '../../jobLog.js';
import { KILL_GRACE_MS } from '../../process.js';
import { type CheckResult, type Runtime, RuntimeSetupError, type StepContext, type StepResult, StepStartError } from '../runtime.js';
import {
  CONTAINER_WORKSPACE, LABEL_EXECUTOR, NETWORK_NAME, containerOptions, describeContainer, type StepContainer,
} from './containerSpec.js';
import { ImagePuller } from './imagePuller.js';
import { NetworkSetupError, blockMetadata, ensureNetwork, metadataBlocked } from './network.js';
import { chooseCredential } from './registryAuth.js';
import { makeAccessible } from './workspaceOwner.js';

type Config = Pick<ExecutorConfig, 'name' | 'jobCpus' | 'jobMemoryBytes' | 'keepWorkspaces' | 'cleanupIntervalMs' | 'docker'>;

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
  private readonly puller: ImagePuller;
  /** Names of containers this process is running: the janitor never touches them. */
  private readonly inUse = new Set<string>();
  private readonly removals = new Set<Promise<void>>();
  /** Workspaces already opened up for a step user, so a repository is walked once per job and user. */
  private readonly accessible = new Set<string>();
  private janitor?: NodeJS.Timeout;
  private jobLimits: JobLimits;
  /** What steps get: the dockhand bridge, or none (set so, or the OCI runtime has no network of its own anyway). */
  private readonly network: 'bridge' | 'none';

  private constructor(
    private readonly docker: Docker,
    private readonly config: Config,
    private readonly engine: EngineInfo,
    private readonly log: Logger,
  ) {
    this.puller = new ImagePuller(docker);
    this.network = networkFor(config, engine);
    // The engine refuses --cpus above the host's CPU count; a larger setting means "all of them".
    const cpus = config.jobCpus > engine.cpus ? engine.cpus : config.jobCpus;
    if (cpus !== config.jobCpus) log.warn({ configured: config.jobCpus, host: engine.cpus }, 'EXECUTOR_JOB_NUM_CPUS is above the host\'s CPU count; using the host\'s');
    this.jobLimits = { cpus, memoryBytes: config.jobMemoryBytes };
  }

  /** Connects to the engine and checks what jobs depend on; throws a DockerSetupError saying what to fix. */
  static async connect(config: Config, log: Logger): Promise<DockerRuntime> {
    const docker = new Docker();
    const engine = await engineInfo(docker);
    const runtime = config.docker.ociRuntime;
    if (runtime && !engine.runtimes.includes(runtime)) {
      throw new DockerSetupError(
        `EXECUTOR_DOCKER_RUNTIME=${runtime} is not a runtime this Docker engine knows (it has: ${engine.runtimes.join(', ')})`,
        runtime === 'runsc'
          ? 'register gVisor in /etc/docker/daemon.json as {"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}} and restart dockerd'
          : `register ${runtime} in /etc/docker/daemon.json under "runtimes" and restart dockerd`,
      );
    }
    if (networkFor(config, engine) === 'bridge') {
      await ensureNetwork(docker);
      try {
        await blockMetadata();
      } catch (err) {
        if (err instanceof NetworkSetupError) throw new DockerSetupError(err.message, err.fix);
        throw err;
      }
    }
    return new DockerRuntime(docker, config, engine, log);
  }


  async version(): Promise<string | undefined> {
    const oci = this.config.docker.ociRuntime || this.engine.defaultRuntime;
    return `Docker ${this.engine.version} (${oci})`;
  }

  limits(): JobLimits {
    return this.jobLimits;
  }

  describeStep(ctx: Omit<StepContext, 'output' | 'outputWritable' | 'note' | 'signal'>): string[] {
    return describeContainer(this.stepContainer(ctx, 'NAME'));
  }

  async runStep(ctx: StepContext): Promise<StepResult> {
    const spec = this.stepContainer(ctx, `dockhand-${ctx.job.id}-${ctx.job.attempt}-${ctx.index + 1}-${randomBytes(3).toString('hex')}`);
    const credential = () => chooseCredential(spec.image, { job: ctx.job.dockerAuthConfig, executor: this.config.docker.authConfig });
    await this.puller.ensure(spec.image, credential, ctx.note, ctx.signal);
    if (ctx.step.user) await this.openWorkspaceFor(ctx.dirs.workspace, ctx.step.user);
    return this.runContainer(spec, { output: ctx.output, writable: ctx.outputWritable }, ctx.signal);
  }

  /** Removes containers labelled with this executor's name that no running job of this process owns. */
  async cleanupOrphans(): Promise<void> {
    const containers = await this.docker.listContainers({ all: true, filters: JSON.stringify({ label: [`${LABEL_EXECUTOR}=${this.config.name}`] }) });
    const orphans = containers.filter(
      (c) =>
        !c.Names.some((n) => this.inUse.has(n.replace(/^\//, ''))) &&
        // Kept for debugging (EXECUTOR_KEEP_WORKSPACES): stopped step containers stay; running leftovers still go.
        (!this.config.keepWorkspaces || c.State === 'running'),
    );
    for (const orphan of orphans) {
      await this.docker.getContainer(orphan.Id).remove({ force: true }).catch((err: Error) => {
        if ((err as { statusCode?: number }).statusCode !== 404) this.log.warn({ container: orphan.Id, err: err.message }, 'could not remove an orphaned container');
      });
    }
    if (orphans.length) this.log.info({ removed: orphans.map((o) => o.Names[0]) }, 'removed orphaned containers');
    this.startJanitor();
  }

  async check(): Promise<CheckResult[]> {
    const results: CheckResult[] = [];
    const host = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
    results.push({ name: 'engine', ok: true, detail: `Docker ${this.engine.version} (API ${this.engine.apiVersion}) at ${host}, ${this.engine.cpus} CPUs` });
    const oci = this.config.docker.ociRuntime || this.engine.defaultRuntime;
    results.push({ name: 'OCI runtime', ok: true, detail: `${oci} is registered (engine runtimes: ${this.engine.runtimes.join(', ')})` });
    if (this.config.docker.network === 'none') results.push({ name: 'network', ok: true, detail: 'EXECUTOR_DOCKER_NETWORK=none: steps have no network at all' });
    else if (this.network === 'none') results.push({ name: 'network', ok: true, detail: `${oci} runs with --network=none: steps have only loopback` });
    else {
      const blocked = await metadataBlocked();
      results.push({
        name: 'metadata block', ok: blocked.ok, detail: blocked.detail,
        fix: blocked.ok ? undefined : 'restart the executor as root (it installs the rules), or set EXECUTOR_DOCKER_NETWORK=none',
      });
    }
    results.push(await this.probeContainer(oci));
    return results;
  }

  async close(): Promise<void> {
    clearInterval(this.janitor);
    await Promise.all(this.removals);
  }

  private stepContainer(ctx: Omit<StepContext, 'output' | 'outputWritable' | 'note' | 'signal'>, name: string): StepContainer {
    return {
      name,
      image: ctx.step.image ?? this.config.docker.defaultImage,
      executorName: this.config.name,
      jobId: ctx.job.id,
      attempt: ctx.job.attempt,
      stepKey: ctx.step.key,
      workspace: ctx.dirs.workspace,
      scripts: path.dirname(ctx.scriptPath),
      scriptName: path.basename(ctx.scriptPath),
      dir: path.relative(ctx.dirs.workspace, ctx.workdir) || '.',
      env: { DOCKHAND_WORKSPACE: CONTAINER_WORKSPACE, ...ctx.env },
      user: ctx.step.user,
      limits: ctx.limits,
      pidsLimit: this.config.docker.pidsLimit,
      network: ctx.spec.network === 'none' || this.network === 'none' ? 'none' : NETWORK_NAME,
      ociRuntime: this.config.docker.ociRuntime,
    };
  }

  /** Creates, attaches to, starts and waits for one container; stops it within 2 s when `signal` aborts. */
  private async runContainer(spec: StepContainer, sink: OutputSink, signal: AbortSignal): Promise<StepResult> {
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
        const { StatusCode } = (await container.wait()) as { StatusCode: number };
        // Output held back for the log is still to come: the drain time counts from the last output taken, and
        // not while the stream is paused.
        lastOutput = Date.now();
        while (!(await Promise.race([drained.then(() => true), sleep(OUTPUT_DRAIN_MS / 4).then(() => false)]))) {
          if (!paused && Date.now() - lastOutput >= OUTPUT_DRAIN_MS) break;
        }
        (stream as unknown as { destroy?(): void }).destroy?.();
        // The OOM killer's SIGKILL makes 137; only then is it worth asking the engine why.
        if (StatusCode === 137 && (await oomKilled(container))) return { exitCode: StatusCode, reason: 'killed: out of memory' };
        return { exitCode: StatusCode };
      } finally {
        signal.removeEventListener('abort', onAbort);
        signal.removeEventListener('abort', readOn);
      }
    } finally {
      if (container && !this.config.keepWorkspaces) this.removeLater(container, spec.name);
      else this.inUse.delete(spec.name);
    }
  }

  /** Removal is off the step's critical path; the janitor catches any that fail. */
  private removeLater(container: Docker.Container, name: string): void {
    const removal = container
      .remove({ force: true })
      .catch((err: Error) => {
        if ((err as { statusCode?: number }).statusCode !== 404) this.log.warn({ container: name, err: err.message }, 'could not remove a step container');
      })
      .finally(() => {
        this.inUse.delete(name);
        this.removals.delete(removal);
      });
    this.removals.add(removal);
  }

  private async openWorkspaceFor(workspace: string, user: string): Promise<void> {
    const key = `${workspace}\n${user}`;
    if (this.accessible.has(key)) return;
    await makeAccessible(workspace, user);
    if (this.accessible.size > 10_000) this.accessible.clear();
    this.accessible.add(key);
  }

  private startJanitor(): void {
    if (this.janitor) return;
    this.janitor = setInterval(() => void this.janitorRound(), this.config.cleanupIntervalMs);
    this.janitor.unref();
  }

  private async janitorRound(): Promise<void> {
    try {
      await this.cleanupOrphans();
      // dockerd restarts and firewall reloads can drop the metadata rules: put them back.
      if (this.network === 'bridge' && !(await metadataBlocked()).ok) {
        this.log.warn('the metadata-blocking iptables rules were missing; reinstalling them');
        await blockMetadata();
      }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'janitor round failed');
    }
  }

  /** Runs `echo ok` in a tiny container made exactly like a step's, under the configured OCI runtime. */
  private async probeContainer(oci: string): Promise<CheckResult> {
    const name = 'test container';
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-check-'));
    try {
      await writeFile(path.join(dir, 'check.sh'), 'echo ok\n', { mode: 0o755 });
      const image = this.config.docker.defaultImage;
      await this.puller.ensure(image, () => chooseCredential(image, { executor: this.config.docker.authConfig }), () => undefined, AbortSignal.timeout(120_000));
      let out = '';
      const result = await this.runContainer(
        {
          name: `dockhand-check-${randomBytes(3).toString('hex')}`, image, executorName: this.config.name, jobId: 0, attempt: 0,
          stepKey: 'check', workspace: dir, scripts: dir, scriptName: 'check.sh', dir: '.', env: {}, limits: this.jobLimits,
          pidsLimit: this.config.docker.pidsLimit, network: this.network === 'none' ? 'none' : NETWORK_NAME,
          ociRuntime: this.config.docker.ociRuntime,
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
        name, ok,
        detail: ok ? `a step container ran under ${oci} from ${image}` : `the ${image} container under ${oci} exited ${result.exitCode}: ${out.trim().slice(0, 500)}`,
        fix: ok ? undefined : `check that ${oci} works: docker run --rm --runtime ${oci} ${image} echo ok`,
      };
    } catch (err) {
      return {
        name, ok: false, detail: (err as Error).message,
        fix: `make the image available (docker pull ${this.config.docker.defaultImage}) or set EXECUTOR_DOCKER_DEFAULT_IMAGE to one the engine has`,
      };
    } finally {
      await Promise.all(this.removals);
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/**
 * gVisor registered with "--network=none" (which machines like ours need) gives its sandbox only loopback whatever
 * Docker attaches: a Docker network would cost a network setup per container (~60 ms) and buy nothing.
 */
function networkFor(config: Config, engine: EngineInfo): 'bridge' | 'none' {
  if (config.docker.network === 'none') return 'none';
  const args = engine.runtimeArgs[config.docker.ociRuntime || engine.defaultRuntime] ?? [];
  const networkless = args.some((arg, i) => arg === '--network=none' || (arg === '--network' && args[i + 1] === 'none'));
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
function engineError(what: string, err: Error): StepStartError {
  const message = (err as { json?: { message?: string } }).json?.message ?? err.message;
  const jobsFault = /unable to find user|no matching entries in passwd|not a directory|no such file or directory|executable file not found|invalid/i.test(message);
  return new StepStartError(`${what}: ${message}`, !jobsFault);
}

/**
 * Whether the engine says the container was killed for memory. It learns so from an event that can arrive just after
 * the exit (seen under gVisor on a busy machine), so a "no" is asked again for a short while.
 */
async function oomKilled(container: Docker.Container): Promise<boolean> {
  for (let tries = 1; ; tries++) {
    if ((await container.inspect()).State.OOMKilled) return true;
    if (tries === OOM_TRIES) return false;
    await sleep(OOM_RETRY_MS);
  }
}

const OOM_TRIES = 6;
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
