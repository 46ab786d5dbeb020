// The docker runtime's own settings (EXECUTOR_DOCKER_*). Kept apart from the runtime so that reading them loads
// no Docker client.
import { z } from 'zod';
import { staticDockerAuthConfigInput, type DockerAuthConfig } from '../../../core/dockerAuthConfig.js';
import { envInt, readEnv } from '../../../core/envConfig.js';
import { VERSION } from '../../../core/version.js';

export interface DockerOptions {
  /** OCI runtime for step containers, as registered with dockerd (runc, runsc); empty = the engine's default. */
  ociRuntime: string;
  /** "bridge": Dockhand's own bridge network with the metadata block; "none": no network for any step. */
  network: 'bridge' | 'none';
  /** Registry credentials from EXECUTOR_DOCKER_AUTH_CONFIG; below a job's own, above ~/.docker/config.json. */
  authConfig?: DockerAuthConfig;
  /** Image for steps that name none. */
  defaultImage: string;
  pidsLimit: number;
  /** The image the repository checkout runs in: git, sh and sleep (made from this host's git when missing). */
  helperImage: string;
}

/** The helper image Dockhand makes itself when the engine lacks it, one per release. */
export const DEFAULT_HELPER_IMAGE = `dockhand-helper:${VERSION}`;

export function dockerOptions(env: NodeJS.ProcessEnv): DockerOptions {
  return {
    ociRuntime: readEnv(
      env,
      'EXECUTOR_DOCKER_RUNTIME',
      z
        .string()
        .regex(
          /^[A-Za-z0-9][A-Za-z0-9._-]*$/,
          'must be the name of a runtime registered with dockerd, e.g. runc or runsc',
        ),
      '',
    ),
    network: readEnv(
      env,
      'EXECUTOR_DOCKER_NETWORK',
      z.enum(['bridge', 'none'], {
        error: () => 'EXECUTOR_DOCKER_NETWORK must be "bridge" (network with the metadata address blocked) or "none"',
      }),
      'bridge',
    ),
    authConfig: readEnv<DockerAuthConfig | undefined>(
      env,
      'EXECUTOR_DOCKER_AUTH_CONFIG',
      staticDockerAuthConfigInput,
      undefined,
      { secret: true },
    ),
    defaultImage: env.EXECUTOR_DOCKER_DEFAULT_IMAGE || 'busybox:latest',
    pidsLimit: readEnv(env, 'EXECUTOR_DOCKER_PIDS_LIMIT', envInt('EXECUTOR_DOCKER_PIDS_LIMIT', 16, 1_000_000), 4096),
    helperImage: env.EXECUTOR_DOCKER_HELPER_IMAGE || DEFAULT_HELPER_IMAGE,
  };
}
