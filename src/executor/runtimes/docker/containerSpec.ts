// What a step container is made of, as plain data: the Docker Engine API's create body, and the equivalent
// `docker run` line shown in the step's log. Pure, so tests can pin both exactly.
import path from 'node:path';
import type { ContainerCreateOptions } from 'dockerode';
import type { JobLimits } from '../../../core/resources.js';

/** Where the job workspace appears inside every step container. */
export const CONTAINER_WORKSPACE = '/data';
/** Where the step scripts appear (read-only), apart from the workspace so they do not show up in it. */
export const CONTAINER_SCRIPTS = '/dockhand';
/** The network Dockhand makes for its containers, and the name of its bridge on the host. */
export const NETWORK_NAME = 'dockhand';
export const BRIDGE_NAME = 'dockhand0';

/** Labels on every container, so the janitor finds its own and nothing else. */
export const LABEL_EXECUTOR = 'dev.dockhand.executor';
export const LABEL_JOB = 'dev.dockhand.job';
export const LABEL_ATTEMPT = 'dev.dockhand.attempt';
export const LABEL_STEP = 'dev.dockhand.step';

export interface StepContainer {
  name: string;
  image: string;
  executorName: string;
  jobId: number;
  attempt: number;
  stepKey: string;
  /** Host directories: the workspace and the scripts. */
  workspace: string;
  scripts: string;
  /** File name of the step's script inside `scripts`. */
  scriptName: string;
  /** The step's `dir`, relative to the workspace. */
  dir: string;
  env: Record<string, string>;
  user?: string;
  limits: JobLimits;
  pidsLimit: number;
  /** "none", or the name of the network to attach to. */
  network: string;
  /** OCI runtime name; empty = the engine's default. */
  ociRuntime: string;
}

export function containerOptions(c: StepContainer): ContainerCreateOptions {
  return {
    name: c.name,
    Image: c.image,
    // The image's own shell runs the script; -e stops at the first failing command, as in the shell runtime.
    Entrypoint: ['/bin/sh'],
    Cmd: ['-e', path.posix.join(CONTAINER_SCRIPTS, c.scriptName)],
    WorkingDir: path.posix.join(CONTAINER_WORKSPACE, c.dir),
    Env: Object.entries(c.env).map(([k, v]) => `${k}=${v}`),
    User: c.user ?? '',
    Labels: {
      [LABEL_EXECUTOR]: c.executorName,
      [LABEL_JOB]: String(c.jobId),
      [LABEL_ATTEMPT]: String(c.attempt),
      [LABEL_STEP]: c.stepKey,
    },
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    OpenStdin: false,
    HostConfig: {
      Mounts: [
        { Type: 'bind', Source: c.workspace, Target: CONTAINER_WORKSPACE },
        { Type: 'bind', Source: c.scripts, Target: CONTAINER_SCRIPTS, ReadOnly: true },
      ],
      NetworkMode: c.network,
      Privileged: false,
      // Docker's default capabilities minus raw sockets (no spoofed packets onto the bridge); none added.
      CapDrop: ['NET_RAW'],
      // setuid binaries inside the image cannot raise privileges.
      SecurityOpt: ['no-new-privileges'],
      PidsLimit: c.pidsLimit,
      NanoCpus: Math.round(c.limits.cpus * 1e9),
      Memory: c.limits.memoryBytes,
      // Equal to Memory: no swap on top, so the limit is the limit (ignored where the kernel lacks swap accounting).
      MemorySwap: c.limits.memoryBytes || 0,
      // A tiny init as PID 1 forwards the stop signal to the script and reaps the zombies a step leaves behind.
      Init: true,
      // Output is read live over attach; the engine keeps no copy of it on disk (it may hold secrets).
      LogConfig: { Type: 'none', Config: {} },
      ...(c.ociRuntime ? { Runtime: c.ociRuntime } : {}),
    },
  };
}

/** The step as a `docker run` line, for the log: environment variable names only, never their values. */
export function describeContainer(c: StepContainer): string[] {
  const o = containerOptions(c);
  const h = o.HostConfig!;
  const args = ['docker', 'run', '--rm', '--init'];
  if (h.Runtime) args.push('--runtime', h.Runtime);
  args.push(
    '--network',
    c.network,
    '--cap-drop',
    'NET_RAW',
    '--security-opt',
    'no-new-privileges',
    '--pids-limit',
    String(c.pidsLimit),
  );
  if (c.limits.cpus) args.push('--cpus', String(c.limits.cpus));
  if (c.limits.memoryBytes) args.push('--memory', String(c.limits.memoryBytes));
  if (c.user) args.push('--user', c.user);
  args.push(
    '-v',
    `${c.workspace}:${CONTAINER_WORKSPACE}`,
    '-v',
    `${c.scripts}:${CONTAINER_SCRIPTS}:ro`,
    '-w',
    o.WorkingDir!,
  );
  for (const key of Object.keys(c.env)) args.push('-e', key);
  args.push('--entrypoint', '/bin/sh', c.image, ...(o.Cmd as string[]));
  return args;
}
