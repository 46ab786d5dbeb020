// The pod status a kubelet writes (pkg/kubelet/kubelet_pods.go getPhase / generateAPIPodStatus and
// pkg/kubelet/status/generate.go), computed from what the double's kubelet knows about each container.
import type { KubeObject } from './util.js';
import { timestamp } from './util.js';

export type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | {
      terminated: {
        exitCode: number;
        reason: string;
        message?: string;
        startedAt: string;
        finishedAt: string;
        containerID?: string;
      };
    };

export interface ContainerRecord {
  name: string;
  image: string;
  init: boolean;
  state: ContainerState;
  lastState: ContainerState | Record<string, never>;
  restartCount: number;
  /** The Docker id of the current incarnation, once created. */
  dockerId?: string;
  imageID?: string;
}

export interface PodRuntime {
  startTime: string;
  hostIP: string;
  podIP?: string;
  sandboxReady: boolean;
  /** A kubelet decision that ends the pod: DeadlineExceeded, Evicted. */
  terminal?: { reason: string; message: string };
  /** DisruptionTarget condition (kubelet-initiated termination). */
  disruption?: { reason: string; message: string };
  /** Set once all containers stopped after a deletion: the pod gets a terminal phase before it goes. */
  finalized: boolean;
  init: ContainerRecord[];
  main: ContainerRecord[];
}

const terminated = (r: ContainerRecord) => ('terminated' in r.state ? r.state.terminated : undefined);
const succeeded = (r: ContainerRecord) => terminated(r)?.exitCode === 0;

export function podPhase(spec: KubeObject, rt: PodRuntime): string {
  if (rt.terminal) return 'Failed';
  const policy = spec.restartPolicy ?? 'Always';
  const phase = runningPhase(policy, rt);
  if (rt.finalized && phase !== 'Succeeded' && phase !== 'Failed') return 'Failed';
  return phase;
}

function runningPhase(policy: string, rt: PodRuntime): string {
  let pendingInit = false;
  for (const c of rt.init) {
    const t = terminated(c);
    if (t && t.exitCode !== 0 && policy === 'Never') return 'Failed';
    if (!t || t.exitCode !== 0) pendingInit = true;
  }
  if (pendingInit) return 'Pending';
  let waiting = 0;
  let running = 0;
  let stopped = 0;
  let ok = 0;
  for (const c of rt.main) {
    if ('running' in c.state) running++;
    else if ('terminated' in c.state) {
      stopped++;
      if (c.state.terminated.exitCode === 0) ok++;
    } else if ('terminated' in c.lastState)
      stopped++; // waiting to restart
    else waiting++;
  }
  if (waiting > 0) return 'Pending';
  if (running > 0) return 'Running';
  if (stopped > 0) {
    if (policy === 'Always') return 'Running';
    if (ok === stopped) return 'Succeeded';
    if (policy === 'OnFailure') return 'Running';
    return 'Failed';
  }
  return 'Pending';
}

function apiContainerStatus(r: ContainerRecord): KubeObject {
  const running = 'running' in r.state;
  return {
    name: r.name,
    state: r.state,
    lastState: r.lastState,
    ready: r.init ? succeeded(r) : running,
    restartCount: r.restartCount,
    image: r.image,
    imageID: r.imageID ?? '',
    ...(r.dockerId ? { containerID: `docker://${r.dockerId}` } : {}),
    started: running,
  };
}

export function buildPodStatus(pod: Readonly<KubeObject>, rt: PodRuntime): KubeObject {
  const phase = podPhase(pod.spec, rt);
  const previous = (pod.status?.conditions ?? []) as KubeObject[];
  const condition = (type: string, ok: boolean, reason?: string, message?: string): KubeObject => {
    const status = ok ? 'True' : 'False';
    const before = previous.find((c) => c.type === type);
    return {
      type,
      status,
      lastProbeTime: null,
      lastTransitionTime: before && before.status === status ? before.lastTransitionTime : timestamp(),
      ...(reason ? { reason } : {}),
      ...(message ? { message } : {}),
    };
  };

  const conditions: KubeObject[] = [];
  if (rt.disruption) conditions.push(condition('DisruptionTarget', true, rt.disruption.reason, rt.disruption.message));
  conditions.push(condition('PodReadyToStartContainers', rt.sandboxReady));

  const incompleteInit = rt.init.filter((c) => !succeeded(c)).map((c) => c.name);
  const anyMainStarted = rt.main.some((c) => !('waiting' in c.state) || c.restartCount > 0);
  if (rt.init.length === 0) conditions.push(condition('Initialized', true));
  else if (phase === 'Succeeded' && incompleteInit.length === 0)
    conditions.push(condition('Initialized', true, 'PodCompleted'));
  else if (anyMainStarted || incompleteInit.length === 0) conditions.push(condition('Initialized', true));
  else
    conditions.push(
      condition(
        'Initialized',
        false,
        'ContainersNotInitialized',
        `containers with incomplete status: [${incompleteInit.join(' ')}]`,
      ),
    );

  const unready = rt.main.filter((c) => !('running' in c.state)).map((c) => c.name);
  for (const type of ['Ready', 'ContainersReady']) {
    if (phase === 'Succeeded') conditions.push(condition(type, false, 'PodCompleted'));
    else if (phase === 'Failed') conditions.push(condition(type, false, 'PodFailed'));
    else if (unready.length)
      conditions.push(
        condition(type, false, 'ContainersNotReady', `containers with unready status: [${unready.join(' ')}]`),
      );
    else conditions.push(condition(type, true));
  }
  const scheduled = previous.find((c) => c.type === 'PodScheduled' && c.status === 'True');
  conditions.push(scheduled ?? condition('PodScheduled', true));

  return {
    phase,
    conditions,
    ...(rt.terminal ? { reason: rt.terminal.reason, message: rt.terminal.message } : {}),
    hostIP: rt.hostIP,
    hostIPs: [{ ip: rt.hostIP }],
    ...(rt.podIP ? { podIP: rt.podIP, podIPs: [{ ip: rt.podIP }] } : {}),
    startTime: rt.startTime,
    ...(rt.init.length ? { initContainerStatuses: rt.init.map(apiContainerStatus) } : {}),
    containerStatuses: rt.main.map(apiContainerStatus),
    qosClass: pod.status?.qosClass,
  };
}
