// The control planes named in builds.EXECUTORS, in their order, and the URL each one's workers reach this server at.
import type { PlaneConfig } from '../buildsConfig.js';
import { CommandPlane } from './commandPlane.js';
import { PlaneError, type ControlPlane } from './controlPlane.js';
import { DockerPlane } from './dockerPlane.js';
import { KubernetesPlane } from './kubernetesPlane.js';
import { ProcessPlane } from './processPlane.js';

export function createPlane(config: PlaneConfig): ControlPlane {
  switch (config.EXECUTOR) {
    case 'process':
      return new ProcessPlane(config);
    case 'docker':
      return new DockerPlane(config);
    case 'kubernetes':
      return new KubernetesPlane(config);
    case 'command':
      return new CommandPlane(config);
  }
}

/** SERVER_URL, or where this plane's workers find a server listening on `port`. */
export async function serverUrlFor(plane: ControlPlane, listening: { port: number; https: boolean }): Promise<string> {
  if (plane.config.SERVER_URL) return plane.config.SERVER_URL.replace(/\/+$/, '');
  const scheme = listening.https ? 'https' : 'http';
  // On the host's network the worker is where the server is; on a bridge, the host is the bridge's gateway.
  if (plane instanceof DockerPlane && plane.config.NETWORK !== 'host')
    return `${scheme}://${await plane.gateway()}:${listening.port}`;
  if (plane instanceof KubernetesPlane) throw new PlaneError('a kubernetes plane needs SERVER_URL');
  return `${scheme}://127.0.0.1:${listening.port}`;
}
