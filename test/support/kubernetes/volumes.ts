// A pod's volumes on this host: emptyDir and secret volumes as directories under the double's temp dir,
// persistentVolumeClaims as Docker volumes that outlive the pod, hostPath as is.
import { chmod, chown, lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import type { ObjectStore } from './objectStore.js';
import { parseBytes, quantityText } from './quantity.js';
import type { KubeObject } from './util.js';

export interface MountSource {
  /** A host path for a bind mount, or a Docker volume name. */
  kind: 'bind' | 'volume';
  source: string;
  /** For Docker volumes: where its data lives on the host (for subPath mounts). */
  hostPath?: string;
  readOnly: boolean;
}

export type SetUpResult = { ok: true; mounts: Map<string, MountSource> } | { ok: false; message: string };

export interface PvcVolumes {
  /** The Docker volume backing a claim (created on first use) and its host path. */
  volumeFor(pvc: Readonly<KubeObject>): Promise<{ name: string; hostPath: string }>;
}

export class PodVolumes {
  private readonly mounts = new Map<string, MountSource>();
  private readonly emptyDirLimits: { name: string; dir: string; limit: number; limitText: string }[] = [];

  constructor(
    private readonly podDir: string,
    private readonly store: ObjectStore,
    private readonly pvcs: PvcVolumes,
  ) {}

  /**
   * Prepares every volume not prepared yet. A volume that cannot be set up yet (its Secret is missing) makes the
   * answer not ok with the kubelet's FailedMount message; the caller retries.
   */
  async setUp(pod: Readonly<KubeObject>): Promise<SetUpResult> {
    const ns = pod.metadata.namespace as string;
    const fsGroup = pod.spec.securityContext?.fsGroup as number | undefined;
    for (const volume of (pod.spec.volumes ?? []) as KubeObject[]) {
      if (this.mounts.has(volume.name)) continue;
      const fail = (why: string): SetUpResult => ({
        ok: false,
        message: `MountVolume.SetUp failed for volume "${volume.name}" : ${why}`,
      });
      const dir = path.join(this.podDir, 'volumes', volume.name);
      if (volume.emptyDir) {
        // Like the kubelet's emptyDir: world-writable; with fsGroup, group-owned and setgid.
        await mkdir(dir, { recursive: true });
        await chmod(dir, 0o777);
        if (fsGroup !== undefined) {
          await chown(dir, 0, fsGroup).catch(() => {});
          await chmod(dir, 0o2777);
        }
        const limit = parseBytes(volume.emptyDir.sizeLimit);
        if (limit !== undefined)
          this.emptyDirLimits.push({
            name: volume.name,
            dir,
            limit,
            limitText: quantityText(volume.emptyDir.sizeLimit),
          });
        this.mounts.set(volume.name, { kind: 'bind', source: dir, readOnly: false });
      } else if (volume.secret) {
        const secret = this.store.peek('secrets', ns, volume.secret.secretName);
        const optional = volume.secret.optional === true;
        if (!secret && !optional) return fail(`secret "${volume.secret.secretName}" not found`);
        const problem = await writeSecretFiles(dir, secret, volume.secret, fsGroup);
        if (problem) return fail(problem);
        this.mounts.set(volume.name, { kind: 'bind', source: dir, readOnly: true });
      } else if (volume.persistentVolumeClaim) {
        const pvc = this.store.peek('persistentvolumeclaims', ns, volume.persistentVolumeClaim.claimName);
        if (!pvc) return fail(`persistentvolumeclaim "${volume.persistentVolumeClaim.claimName}" not found`);
        const backing = await this.pvcs.volumeFor(pvc);
        if (fsGroup !== undefined) await applyFsGroup(backing.hostPath, fsGroup).catch(() => {});
        this.mounts.set(volume.name, {
          kind: 'volume',
          source: backing.name,
          hostPath: backing.hostPath,
          readOnly: volume.persistentVolumeClaim.readOnly === true,
        });
      } else if (volume.hostPath) {
        if (volume.hostPath.type === 'DirectoryOrCreate') await mkdir(volume.hostPath.path, { recursive: true });
        this.mounts.set(volume.name, { kind: 'bind', source: volume.hostPath.path, readOnly: false });
      } else if (volume.configMap) {
        if (volume.configMap.optional !== true) return fail(`configmap "${volume.configMap.name}" not found`);
        await mkdir(dir, { recursive: true });
        this.mounts.set(volume.name, { kind: 'bind', source: dir, readOnly: true });
      } else {
        return fail('this volume type is not supported by the Kubernetes API double');
      }
    }
    return { ok: true, mounts: this.mounts };
  }

  /** The emptyDirs over their sizeLimit (usage counted as du does: allocated blocks). */
  async overLimit(): Promise<{ name: string; limitText: string } | undefined> {
    for (const v of this.emptyDirLimits) {
      if ((await diskUsage(v.dir)) > v.limit) return v;
    }
    return undefined;
  }

  get hasSizeLimits(): boolean {
    return this.emptyDirLimits.length > 0;
  }
}

/** One file per key (or per listed item), modes from defaultMode / items[].mode; group fsGroup and readable. */
async function writeSecretFiles(
  dir: string,
  secret: Readonly<KubeObject> | undefined,
  source: KubeObject,
  fsGroup: number | undefined,
): Promise<string | undefined> {
  const data = (secret?.data ?? {}) as Record<string, string>;
  const defaultMode = (source.defaultMode as number | undefined) ?? 0o644;
  const items = (source.items ?? Object.keys(data).map((key) => ({ key, path: key }))) as {
    key: string;
    path: string;
    mode?: number;
  }[];
  for (const item of items) {
    if (!(item.key in data) && source.optional !== true) return `references non-existent secret key: ${item.key}`;
  }
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o755);
  if (fsGroup !== undefined) await chown(dir, 0, fsGroup).catch(() => {});
  for (const item of items) {
    if (!(item.key in data)) continue;
    const file = path.join(dir, item.path);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, Buffer.from(data[item.key], 'base64'));
    let mode = item.mode ?? defaultMode;
    if (fsGroup !== undefined) {
      // SetVolumeOwnership for a read-only volume: group fsGroup, group-readable.
      await chown(file, 0, fsGroup).catch(() => {});
      mode |= 0o440;
    }
    await chmod(file, mode & 0o7777);
  }
  return undefined;
}

/** fsGroup on a claim's volume: every file group-owned by fsGroup and group-writable, directories setgid. */
export async function applyFsGroup(root: string, gid: number): Promise<void> {
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p);
    if (st.isSymbolicLink()) return;
    await chown(p, st.uid, gid);
    await chmod(p, (st.mode & 0o7777) | (st.isDirectory() ? 0o2070 : 0o060));
    if (st.isDirectory()) for (const entry of await readdir(p)) await walk(path.join(p, entry));
  };
  await walk(root);
}

/** Bytes allocated under `root`, as `du` counts them; files that vanish meanwhile count nothing. */
export async function diskUsage(root: string): Promise<number> {
  let total = 0;
  const walk = async (p: string): Promise<void> => {
    let st;
    try {
      st = await lstat(p);
    } catch {
      return;
    }
    total += st.blocks * 512;
    if (!st.isDirectory()) return;
    let entries: string[] = [];
    try {
      entries = await readdir(p);
    } catch {
      return;
    }
    for (const e of entries) await walk(path.join(p, e));
  };
  await walk(root);
  return total;
}

export async function removeTree(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}
