// Server-side defaults, as the API's SetDefaults_* functions and the default admission plugins fill them in.
import { isPlainObject, type KubeObject } from './util.js';

/** SetDefaults_PodSpec and SetDefaults_Container: what a stored pod spec (or Job template) always has. */
export function defaultPodSpec(spec: KubeObject, restartPolicyDefault?: string): void {
  if (!spec.restartPolicy && restartPolicyDefault) spec.restartPolicy = restartPolicyDefault;
  spec.dnsPolicy ??= 'ClusterFirst';
  spec.schedulerName ??= 'default-scheduler';
  spec.terminationGracePeriodSeconds ??= 30;
  spec.securityContext ??= {};
  for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])] as KubeObject[]) defaultContainer(c);
  for (const v of (spec.volumes ?? []) as KubeObject[]) {
    if (isPlainObject(v.secret)) v.secret.defaultMode ??= 0o644;
    if (isPlainObject(v.emptyDir) && Object.keys(v.emptyDir).length === 0) v.emptyDir = {};
  }
}

function defaultContainer(c: KubeObject): void {
  c.terminationMessagePath ??= '/dev/termination-log';
  c.terminationMessagePolicy ??= 'File';
  c.imagePullPolicy ??= defaultPullPolicy(String(c.image ?? ''));
  c.resources ??= {};
  // Requests default to the limits when only limits are given.
  if (isPlainObject(c.resources.limits)) {
    c.resources.requests = { ...c.resources.limits, ...(c.resources.requests ?? {}) };
  }
}

/** `Always` for `:latest` and untagged images, else `IfNotPresent`. */
export function defaultPullPolicy(image: string): string {
  if (image.includes('@')) return 'IfNotPresent';
  const lastPart = image.slice(image.lastIndexOf('/') + 1);
  const tag = lastPart.includes(':') ? lastPart.slice(lastPart.indexOf(':') + 1) : '';
  return tag === '' || tag === 'latest' ? 'Always' : 'IfNotPresent';
}

/** What admission adds to a pod on create (ServiceAccount, DefaultTolerationSeconds, Priority). */
export function admitPod(pod: KubeObject): void {
  const spec = pod.spec;
  spec.serviceAccountName ??= spec.serviceAccount ?? 'default';
  spec.serviceAccount ??= spec.serviceAccountName;
  spec.enableServiceLinks ??= true;
  spec.priority ??= 0;
  spec.preemptionPolicy ??= 'PreemptLowerPriority';
  const tolerations = (spec.tolerations ??= []) as KubeObject[];
  for (const key of ['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable']) {
    if (!tolerations.some((t) => t.key === key && t.effect === 'NoExecute')) {
      tolerations.push({ key, operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 });
    }
  }
}

/** The pod's QoS class (Guaranteed / Burstable / BestEffort) from its containers' requests and limits. */
export function qosClass(spec: KubeObject): string {
  const containers = [...(spec.initContainers ?? []), ...(spec.containers ?? [])] as KubeObject[];
  let anySet = false;
  let guaranteed = true;
  for (const c of containers) {
    const requests = (c.resources?.requests ?? {}) as Record<string, unknown>;
    const limits = (c.resources?.limits ?? {}) as Record<string, unknown>;
    if (Object.keys(requests).length || Object.keys(limits).length) anySet = true;
    for (const r of ['cpu', 'memory']) {
      if (limits[r] === undefined || String(requests[r] ?? limits[r]) !== String(limits[r])) guaranteed = false;
    }
  }
  if (!anySet) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}
