// A container spec turned into a Docker create body, the way the kubelet turns it into a CRI container config:
// command/args with $(VAR) expansion, env (values, Secret keys, downward API fields), mounts, limits, the
// security context and a shared process namespace.
import path from 'node:path';
import type { ContainerCreateOptions } from 'dockerode';
import type { ObjectStore } from './objectStore.js';
import { parseBytes, parseQuantity } from './quantity.js';
import type { KubeObject } from './util.js';
import type { MountSource } from './volumes.js';

/** A container that cannot be configured yet: the kubelet's CreateContainerConfigError. */
export class ContainerConfigError extends Error {}

/** The container's environment in order, or a ContainerConfigError (missing Secret / key). */
export function resolveEnv(pod: Readonly<KubeObject>, container: KubeObject, store: ObjectStore): Map<string, string> {
  const ns = pod.metadata.namespace as string;
  const env = new Map<string, string>();
  const secretOf = (name: string, optional: boolean) => {
    const secret = store.peek('secrets', ns, name);
    if (!secret && !optional) throw new ContainerConfigError(`secret "${name}" not found`);
    return secret;
  };
  for (const from of (container.envFrom ?? []) as KubeObject[]) {
    if (from.secretRef) {
      const secret = secretOf(from.secretRef.name, from.secretRef.optional === true);
      for (const [key, value] of Object.entries((secret?.data ?? {}) as Record<string, string>)) {
        env.set(`${from.prefix ?? ''}${key}`, Buffer.from(value, 'base64').toString('utf8'));
      }
    } else if (from.configMapRef && from.configMapRef.optional !== true) {
      throw new ContainerConfigError(`configmap "${from.configMapRef.name}" not found`);
    }
  }
  for (const e of (container.env ?? []) as KubeObject[]) {
    if (e.valueFrom === undefined) {
      env.set(e.name, expand(String(e.value ?? ''), env));
      continue;
    }
    const ref = e.valueFrom;
    if (ref.secretKeyRef) {
      const { name, key, optional } = ref.secretKeyRef;
      const secret = secretOf(name, optional === true);
      const value = secret?.data?.[key] as string | undefined;
      if (value === undefined) {
        if (optional === true) continue;
        throw new ContainerConfigError(`couldn't find key ${key} in Secret ${ns}/${name}`);
      }
      env.set(e.name, Buffer.from(value, 'base64').toString('utf8'));
    } else if (ref.fieldRef) {
      env.set(e.name, podField(pod, String(ref.fieldRef.fieldPath)));
    } else if (ref.resourceFieldRef) {
      env.set(e.name, resourceField(container, ref.resourceFieldRef));
    } else if (ref.configMapKeyRef) {
      if (ref.configMapKeyRef.optional === true) continue;
      throw new ContainerConfigError(`configmap "${ref.configMapKeyRef.name}" not found`);
    }
  }
  return env;
}

/** $(VAR) references to defined variables are replaced; $$ escapes; undefined references stay as written. */
export function expand(text: string, env: Map<string, string>): string {
  return text.replace(/\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)/g, (whole, name: string | undefined) => {
    if (whole === '$$') return '$';
    return name !== undefined && env.has(name) ? env.get(name)! : whole;
  });
}

function podField(pod: Readonly<KubeObject>, fieldPath: string): string {
  const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (m) return String(pod.metadata[m[1]]?.[m[2]] ?? '');
  const fields: Record<string, unknown> = {
    'metadata.name': pod.metadata.name,
    'metadata.namespace': pod.metadata.namespace,
    'metadata.uid': pod.metadata.uid,
    'spec.nodeName': pod.spec.nodeName,
    'spec.serviceAccountName': pod.spec.serviceAccountName,
    'status.hostIP': pod.status?.hostIP,
    'status.podIP': pod.status?.podIP,
  };
  return String(fields[fieldPath] ?? '');
}

function resourceField(container: KubeObject, ref: KubeObject): string {
  const [kind, resource] = String(ref.resource).split('.');
  const value = parseQuantity(container.resources?.[kind]?.[resource]);
  const divisor = parseQuantity(ref.divisor ?? '1') ?? 1;
  if (value === undefined) return '0';
  return String(Math.ceil(value / divisor));
}

export interface ContainerPlan {
  pod: Readonly<KubeObject>;
  container: KubeObject;
  dockerName: string;
  sandboxId: string;
  env: Map<string, string>;
  mounts: Map<string, MountSource>;
  terminationLogFile: string;
  labels: Record<string, string>;
  /** The image's configured user, to judge runAsNonRoot when the spec names no user. */
  imageUser: string;
}

/** The Docker create body for one container of a pod. */
export function containerCreateOptions(plan: ContainerPlan): ContainerCreateOptions {
  const { pod, container: c } = plan;
  const podSc = (pod.spec.securityContext ?? {}) as KubeObject;
  const sc = (c.securityContext ?? {}) as KubeObject;
  const runAsUser = (sc.runAsUser ?? podSc.runAsUser) as number | undefined;
  const runAsGroup = (sc.runAsGroup ?? podSc.runAsGroup) as number | undefined;
  const runAsNonRoot = (sc.runAsNonRoot ?? podSc.runAsNonRoot) as boolean | undefined;
  const podRef = `${pod.metadata.name}_${pod.metadata.namespace}(${pod.metadata.uid})`;
  if (runAsNonRoot) {
    if (runAsUser === 0)
      throw new ContainerConfigError(
        `container's runAsUser breaks non-root policy (pod: "${podRef}", container: ${c.name})`,
      );
    if (runAsUser === undefined) {
      const user = plan.imageUser.split(':')[0];
      if (user === '' || user === 'root' || user === '0') {
        throw new ContainerConfigError(
          `container has runAsNonRoot and image will run as root (pod: "${podRef}", container: ${c.name})`,
        );
      }
      if (!/^\d+$/.test(user)) {
        throw new ContainerConfigError(
          `container has runAsNonRoot and image has non-numeric user (${user}), cannot verify user is non-root (pod: "${podRef}", container: ${c.name})`,
        );
      }
    }
  }
  let user = '';
  if (runAsUser !== undefined) user = runAsGroup !== undefined ? `${runAsUser}:${runAsGroup}` : String(runAsUser);
  else if (runAsGroup !== undefined) user = `${plan.imageUser.split(':')[0] || '0'}:${runAsGroup}`;

  const groups = [podSc.fsGroup, ...((podSc.supplementalGroups ?? []) as number[])]
    .filter((g) => g !== undefined)
    .map(String);
  const memory = parseBytes(c.resources?.limits?.memory);
  const cpuLimit = parseQuantity(c.resources?.limits?.cpu);
  const cpuRequest = parseQuantity(c.resources?.requests?.cpu);
  const capabilities = (sc.capabilities ?? {}) as { add?: string[]; drop?: string[] };
  const securityOpt: string[] = [];
  if (sc.allowPrivilegeEscalation === false) securityOpt.push('no-new-privileges');
  const seccomp = (sc.seccompProfile ?? podSc.seccompProfile)?.type;
  if (seccomp === 'Unconfined') securityOpt.push('seccomp=unconfined');

  // An empty command or args means "the image's", as an absent one.
  const expanded = (list: unknown) =>
    Array.isArray(list) && list.length > 0 ? list.map((s) => expand(String(s), plan.env)) : undefined;
  const command = expanded(c.command);
  const args = expanded(c.args);

  const mounts: NonNullable<ContainerCreateOptions['HostConfig']>['Mounts'] = [];
  for (const m of (c.volumeMounts ?? []) as KubeObject[]) {
    const source = plan.mounts.get(m.name);
    if (!source) continue;
    const readOnly = source.readOnly || m.readOnly === true;
    if (m.subPath) {
      // A subPath is bind-mounted from inside the volume (created when missing, as the kubelet does).
      const base = source.kind === 'bind' ? source.source : source.hostPath!;
      mounts.push({ Type: 'bind', Source: path.join(base, m.subPath), Target: m.mountPath, ReadOnly: readOnly });
    } else if (source.kind === 'volume') {
      // NoCopy: the claim's data is the claim's, not seeded from the image at the mount point.
      mounts.push({
        Type: 'volume',
        Source: source.source,
        Target: m.mountPath,
        ReadOnly: readOnly,
        VolumeOptions: { NoCopy: true } as {
          NoCopy: boolean;
          Labels: Record<string, string>;
          DriverConfig: { Name: string; Options: Record<string, string> };
        },
      });
    } else {
      mounts.push({ Type: 'bind', Source: source.source, Target: m.mountPath, ReadOnly: readOnly });
    }
  }
  mounts.push({
    Type: 'bind',
    Source: plan.terminationLogFile,
    Target: c.terminationMessagePath ?? '/dev/termination-log',
    ReadOnly: false,
  });

  return {
    name: plan.dockerName,
    Image: c.image,
    // command replaces the image's ENTRYPOINT (and drops its CMD), args replace CMD: the same rules as Docker's.
    ...(command ? { Entrypoint: command } : {}),
    ...(args ? { Cmd: args } : command ? { Cmd: [] } : {}),
    ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
    Env: [...plan.env].map(([k, v]) => `${k}=${v}`),
    User: user,
    Labels: plan.labels,
    Tty: c.tty === true,
    OpenStdin: c.stdin === true,
    StdinOnce: c.stdinOnce === true,
    AttachStdout: false,
    AttachStderr: false,
    HostConfig: {
      // The pod's containers share the sandbox's network and IPC namespaces, as behind a pause container.
      NetworkMode: `container:${plan.sandboxId}`,
      IpcMode: `container:${plan.sandboxId}`,
      // shareProcessNamespace: the sandbox's process is PID 1 for every container of the pod, as pause is.
      ...(pod.spec.shareProcessNamespace === true ? { PidMode: `container:${plan.sandboxId}` } : {}),
      Mounts: mounts,
      ...(memory ? { Memory: memory, MemorySwap: memory } : {}),
      ...(cpuLimit ? { NanoCpus: Math.round(cpuLimit * 1e9) } : {}),
      ...(cpuRequest ? { CpuShares: Math.max(2, Math.round(cpuRequest * 1024)) } : {}),
      ...(capabilities.add?.length ? { CapAdd: capabilities.add } : {}),
      ...(capabilities.drop?.length ? { CapDrop: capabilities.drop } : {}),
      ...(securityOpt.length ? { SecurityOpt: securityOpt } : {}),
      ...(groups.length ? { GroupAdd: groups } : {}),
      ReadonlyRootfs: sc.readOnlyRootFilesystem === true,
      Privileged: sc.privileged === true,
      LogConfig: { Type: 'json-file', Config: {} },
      RestartPolicy: { Name: 'no' },
    },
  };
}
