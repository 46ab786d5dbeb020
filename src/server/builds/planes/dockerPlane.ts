// The docker plane: each worker is a container from the worker image on a Docker engine, under runc or another OCI
// runtime (DOCKER_RUNTIME). buildah inside makes a user namespace, which needs a seccomp profile that allows it; the
// Dockerfile's RUN steps then meet the host kernel under runc (docs/build-workers.md says what that isolates, and
// why gVisor's runsc cannot run buildah's RUN steps with the gVisor Debian ships). The token is copied into the container before it
// starts, never put in its environment (docker inspect would show it).
import { readFileSync } from 'node:fs';
import Docker from 'dockerode';
import { pack } from 'tar-stream';
import { cpuMillis, type DockerPlaneConfig } from '../buildsConfig.js';
import { parseSize } from '../../../core/units.js';
import { BUILD_LABEL, PLANE_LABEL, PlaneError, type ControlPlane, type WorkerLaunch } from './controlPlane.js';

export const WORKER_TOKEN_PATH = '/run/dockhand/registration-token';

function tarOf(file: string, content: string): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on('data', (c: unknown) => chunks.push(c as Buffer));
    tar.on('end', () => resolve(Buffer.concat(chunks)));
    tar.on('error', reject);
  });
  const name = file.replace(/^\//, '');
  // Parent folders first: the image need not have them.
  const parts = name.split('/');
  for (let i = 1; i < parts.length; i++)
    tar.entry({ name: parts.slice(0, i).join('/'), type: 'directory', mode: 0o755 });
  tar.entry({ name, mode: 0o400 }, content);
  tar.finalize();
  return done;
}

/**
 * What buildah needs from the container (measured: docs/build-workers.md). Under runc: to make a user namespace,
 * which Docker's default seccomp profile refuses; podman's profile allows it and keeps a filter on everything else,
 * and with no CAP_SYS_ADMIN buildah maps ids in a user namespace of its own with Docker's default capabilities.
 * Under gVisor: CAP_SYS_ADMIN, which there is gVisor's kernel's, not the host's; mounts and namespaces never reach
 * the host kernel.
 */
export function sandboxOptions(
  sandbox: 'runc' | 'gvisor',
  seccompProfile: string | undefined,
): { CapAdd?: string[]; SecurityOpt?: string[] } {
  if (sandbox === 'gvisor') return { CapAdd: ['SYS_ADMIN'] };
  return { SecurityOpt: [`seccomp=${seccompProfile ?? 'unconfined'}`] };
}

/**
 * The profile's JSON (the engine takes it inline), undefined for "unconfined", or why there is none: SECCOMP_PROFILE,
 * else podman's. A missing profile is never quietly replaced by no filter.
 */
export function readSeccompProfile(setting: string | undefined): { json?: string; problem?: string } {
  if (setting === 'unconfined') return {};
  const file = setting ?? PODMAN_SECCOMP_PROFILE;
  try {
    return { json: JSON.stringify(JSON.parse(readFileSync(file, 'utf8'))) };
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return {
      problem: setting
        ? `SECCOMP_PROFILE ${setting}: cannot read it as a JSON seccomp profile (${why})`
        : `no seccomp profile for the worker: podman's ${PODMAN_SECCOMP_PROFILE} is not on this host (${why}); install containers-common, or set SECCOMP_PROFILE to a profile file, or to "unconfined"`,
    };
  }
}

/** Debian's containers-common (installed with buildah) ships it. */
const PODMAN_SECCOMP_PROFILE = '/usr/share/containers/seccomp.json';

const statusOf = (err: unknown): number | undefined => (err as { statusCode?: number }).statusCode;

export class DockerPlane implements ControlPlane {
  private readonly docker: Docker;
  private readonly seccomp: { json?: string; problem?: string };

  constructor(readonly config: DockerPlaneConfig) {
    this.docker = config.DOCKER_SOCKET ? new Docker({ socketPath: config.DOCKER_SOCKET }) : new Docker();
    this.seccomp = readSeccompProfile(config.SECCOMP_PROFILE);
  }

  get name(): string {
    return this.config.NAME;
  }

  private sandboxKind: Promise<'runc' | 'gvisor'> | undefined;

  /** gVisor when DOCKER_RUNTIME is a runsc as the engine registers it; runc (or another runtime like it) otherwise. */
  private sandbox(): Promise<'runc' | 'gvisor'> {
    const runtime = this.config.DOCKER_RUNTIME;
    if (!runtime) return Promise.resolve('runc');
    this.sandboxKind ??= this.docker.info().then(
      (info: { Runtimes?: Record<string, { path?: string }> }) => {
        const registered = info.Runtimes?.[runtime];
        if (!registered)
          throw new PlaneError(
            `DOCKER_RUNTIME ${runtime} is not registered with the engine (it has ${Object.keys(info.Runtimes ?? {}).join(', ')})`,
          );
        return /runsc/.test(registered.path ?? runtime) ? 'gvisor' : 'runc';
      },
      (err: Error) => {
        throw new PlaneError(`cannot reach the Docker engine: ${err.message}`);
      },
    );
    // A failure is not kept: the engine may be back at the next start.
    this.sandboxKind.catch(() => (this.sandboxKind = undefined));
    return this.sandboxKind;
  }

  get image(): string {
    return `${this.config.WORKER_IMAGE}:${this.config.WORKER_TAG}`;
  }

  /** The address containers on NETWORK reach the host at, for SERVER_URL's default. */
  async gateway(): Promise<string> {
    try {
      const info = await this.docker.getNetwork(this.config.NETWORK).inspect();
      const gw = (info.IPAM?.Config ?? []).map((c: { Gateway?: string }) => c.Gateway).find(Boolean);
      if (gw) return gw;
    } catch (err) {
      throw new PlaneError(`cannot inspect Docker network ${this.config.NETWORK}: ${(err as Error).message}`);
    }
    throw new PlaneError(`Docker network ${this.config.NETWORK} has no gateway address; set SERVER_URL`);
  }

  async start(launch: WorkerLaunch): Promise<void> {
    const c = this.config;
    const sandbox = await this.sandbox();
    if (sandbox === 'runc' && this.seccomp.problem) throw new PlaneError(this.seccomp.problem);
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        name: launch.executionId,
        Image: this.image,
        Cmd: ['build-worker', '--server', launch.serverUrl, '--token-file', WORKER_TOKEN_PATH],
        Labels: { [PLANE_LABEL]: c.NAME, [BUILD_LABEL]: String(launch.buildId) },
        Env: ['DOCKHAND_BUILD_WORK_DIR=/var/lib/dockhand-build'],
        HostConfig: {
          Runtime: c.DOCKER_RUNTIME,
          NetworkMode: c.NETWORK,
          Memory: parseSize(c.CONTAINER_MEMORY_LIMITS),
          NanoCpus: cpuMillis(c.CONTAINER_CPU_LIMITS) * 1_000_000,
          PidsLimit: 4096,
          Init: true,
          ...sandboxOptions(sandbox, this.seccomp.json),
        },
      });
    } catch (err) {
      const why = statusOf(err) === 404 ? `image ${this.image} not found on the engine` : (err as Error).message;
      throw new PlaneError(`cannot create the worker container: ${why}`);
    }
    try {
      await container.putArchive(await tarOf(WORKER_TOKEN_PATH, `${launch.registrationToken}\n`), { path: '/' });
      await container.start();
    } catch (err) {
      await container.remove({ force: true }).catch(() => undefined);
      throw new PlaneError(`cannot start the worker container: ${(err as Error).message}`);
    }
  }

  async stop(executionId: string): Promise<void> {
    try {
      await this.docker.getContainer(executionId).remove({ force: true, v: true });
    } catch (err) {
      if (statusOf(err) === 404) return;
      // Removal already under way (409) ends by itself.
      if (statusOf(err) === 409) return;
      throw new PlaneError(`cannot remove worker container ${executionId}: ${(err as Error).message}`);
    }
  }

  async running(): Promise<number> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${PLANE_LABEL}=${this.config.NAME}`], status: ['created', 'running'] },
    });
    return list.length;
  }

  async close(): Promise<void> {}
}
