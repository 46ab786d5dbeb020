// The Docker objects a double owns (containers, volumes, its network), found by label: created with the double's
// labels, removed by them on close, and swept when a test process died without closing its double.
import { readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { dockerStatus } from './util.js';

/** A double's temp dir: `<prefix><pid>-<random>`, so one left by a dead process can be found. */
export const TEMP_DIR_PREFIX = 'kube-double-';

/** Every container, volume and network of a double carries this label with the double's instance id… */
export const INSTANCE_LABEL = 'dev.dockhand.kube-double';
/** …and the test process's pid, so leftovers of a dead process can be told apart and removed. */
export const PID_LABEL = 'dev.dockhand.kube-double.pid';
export const POD_UID_LABEL = 'io.kubernetes.pod.uid';
export const POD_NAME_LABEL = 'io.kubernetes.pod.name';
export const POD_NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
export const CONTAINER_NAME_LABEL = 'io.kubernetes.container.name';

export function instanceLabels(instance: string): Record<string, string> {
  return { [INSTANCE_LABEL]: instance, [PID_LABEL]: String(process.pid) };
}

/** A bridge network of the double's own, and its gateway: this host's address as the pods see it. */
export async function createNetwork(docker: Docker, name: string, labels: Record<string, string>): Promise<string> {
  const network = await docker.createNetwork({ Name: name, Driver: 'bridge', CheckDuplicate: true, Labels: labels });
  const info = await network.inspect();
  const gateway = (info.IPAM?.Config ?? []).map((c: { Gateway?: string }) => c.Gateway).find(Boolean);
  if (!gateway) throw new Error(`docker network ${name} has no gateway`);
  return gateway as string;
}

/** Removes every container, volume and network with the label `filter` (`key=value`). */
export async function removeLabelled(docker: Docker, filter: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [filter] } });
  await Promise.all(containers.map((c) => removeContainer(docker, c.Id)));
  const { Volumes } = await docker.listVolumes({ filters: { label: [filter] } });
  await Promise.all((Volumes ?? []).map((v) => removeVolume(docker, v.Name)));
  const networks = await docker.listNetworks({ filters: { label: [filter] } });
  await Promise.all(
    networks.map((n) =>
      docker
        .getNetwork(n.Id)
        .remove()
        .catch((err: unknown) => {
          if (dockerStatus(err) !== 404) throw err;
        }),
    ),
  );
}

export async function removeContainer(docker: Docker, id: string): Promise<void> {
  try {
    await docker.getContainer(id).remove({ force: true, v: true });
  } catch (err) {
    // Gone already, or already being removed by an earlier call.
    if (dockerStatus(err) !== 404 && dockerStatus(err) !== 409) throw err;
  }
}

export async function removeVolume(docker: Docker, name: string): Promise<boolean> {
  try {
    await docker.getVolume(name).remove();
    return true;
  } catch (err) {
    if (dockerStatus(err) === 404) return true;
    if (dockerStatus(err) === 409) return false; // still used by a container
    throw err;
  }
}

function isDead(pid: string | undefined): boolean {
  if (!pid || pid === String(process.pid)) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Leftovers of doubles whose test process is gone (killed before close): remove them. */
export async function sweepAbandoned(docker: Docker): Promise<void> {
  const dead = new Set<string>();
  for (const entry of await readdir(os.tmpdir()).catch(() => [] as string[])) {
    const m = new RegExp(`^${TEMP_DIR_PREFIX}(\\d+)-`).exec(entry);
    if (m && isDead(m[1])) await rm(path.join(os.tmpdir(), entry), { recursive: true, force: true }).catch(() => {});
  }
  const containers = await docker.listContainers({ all: true, filters: { label: [PID_LABEL] } });
  for (const c of containers) if (isDead(c.Labels[PID_LABEL])) dead.add(c.Labels[INSTANCE_LABEL]);
  const { Volumes } = await docker.listVolumes({ filters: { label: [PID_LABEL] } });
  for (const v of Volumes ?? []) if (isDead(v.Labels?.[PID_LABEL])) dead.add(v.Labels[INSTANCE_LABEL]);
  const networks = await docker.listNetworks({ filters: { label: [PID_LABEL] } });
  for (const n of networks) if (isDead(n.Labels?.[PID_LABEL])) dead.add(n.Labels![INSTANCE_LABEL]);
  for (const instance of dead) await removeLabelled(docker, `${INSTANCE_LABEL}=${instance}`).catch(() => {});
}
