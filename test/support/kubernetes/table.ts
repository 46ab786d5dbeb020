// Server-side printing (meta.k8s.io/v1 Table), which kubectl asks for when it prints for humans (`kubectl get`),
// with the columns and STATUS logic of the apiserver's printers for the kinds the double serves.
import type { KubeObject } from './util.js';

interface Column {
  name: string;
  type: string;
  format?: string;
  description: string;
  priority?: number;
}

type Printer = { columns: Column[]; cells(obj: KubeObject, now: number): unknown[] };

const nameColumn: Column = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
};
const ageColumn: Column = {
  name: 'Age',
  type: 'string',
  description: 'CreationTimestamp is the time the object was created.',
};

const PRINTERS: Record<string, Printer> = {
  Pod: {
    columns: [
      nameColumn,
      {
        name: 'Ready',
        type: 'string',
        description: 'The aggregate readiness state of this pod for accepting traffic.',
      },
      { name: 'Status', type: 'string', description: 'The aggregate status of the containers in this pod.' },
      {
        name: 'Restarts',
        type: 'string',
        description: 'The number of times the containers in this pod have been restarted.',
      },
      ageColumn,
      { name: 'IP', type: 'string', priority: 1, description: 'IP address allocated to the pod.' },
      { name: 'Node', type: 'string', priority: 1, description: 'Name of the node this pod is running on.' },
    ],
    cells: (pod, now) => {
      const { ready, total, reason, restarts } = podSummary(pod);
      return [
        pod.metadata.name,
        `${ready}/${total}`,
        reason,
        String(restarts),
        age(pod, now),
        pod.status?.podIP ?? '<none>',
        pod.spec?.nodeName ?? '<none>',
      ];
    },
  },
  Job: {
    columns: [
      nameColumn,
      { name: 'Status', type: 'string', description: 'Status of the job.' },
      { name: 'Completions', type: 'string', description: 'The completion status of the job.' },
      { name: 'Duration', type: 'string', description: 'Time required to complete the job.' },
      ageColumn,
      { name: 'Containers', type: 'string', priority: 1, description: 'Names of each container in the template.' },
      {
        name: 'Images',
        type: 'string',
        priority: 1,
        description: 'Images referenced by each container in the template.',
      },
    ],
    cells: (job, now) => {
      const containers = (job.spec?.template?.spec?.containers ?? []) as KubeObject[];
      const start = job.status?.startTime ? Date.parse(job.status.startTime) : undefined;
      const end = job.status?.completionTime ? Date.parse(job.status.completionTime) : now;
      return [
        job.metadata.name,
        jobStatus(job),
        `${job.status?.succeeded ?? 0}/${job.spec?.completions ?? 1}`,
        start === undefined ? '' : humanDuration(end - start),
        age(job, now),
        containers.map((c) => c.name).join(','),
        containers.map((c) => c.image).join(','),
      ];
    },
  },
  Secret: {
    columns: [
      nameColumn,
      { name: 'Type', type: 'string', description: 'Used to facilitate programmatic handling of secret data.' },
      { name: 'Data', type: 'string', description: 'The number of keys in the secret.' },
      ageColumn,
    ],
    cells: (s, now) => [s.metadata.name, s.type, Object.keys(s.data ?? {}).length, age(s, now)],
  },
  PersistentVolumeClaim: {
    columns: [
      nameColumn,
      { name: 'Status', type: 'string', description: 'The phase of the claim.' },
      { name: 'Volume', type: 'string', description: 'The binding volume.' },
      { name: 'Capacity', type: 'string', description: 'The capacity of the claim.' },
      { name: 'Access Modes', type: 'string', description: 'The access modes of the claim.' },
      { name: 'StorageClass', type: 'string', description: 'The storage class of the claim.' },
      ageColumn,
    ],
    cells: (pvc, now) => [
      pvc.metadata.name,
      pvc.metadata.deletionTimestamp ? 'Terminating' : (pvc.status?.phase ?? ''),
      pvc.spec?.volumeName ?? '',
      pvc.status?.capacity?.storage ?? '',
      ((pvc.status?.accessModes ?? []) as string[])
        .map(
          (m) =>
            ({ ReadWriteOnce: 'RWO', ReadOnlyMany: 'ROX', ReadWriteMany: 'RWX', ReadWriteOncePod: 'RWOP' })[m] ?? m,
        )
        .join(','),
      pvc.spec?.storageClassName ?? '<unset>',
      age(pvc, now),
    ],
  },
  Event: {
    columns: [
      { name: 'Last Seen', type: 'string', description: 'The last time the event was seen.' },
      { name: 'Type', type: 'string', description: 'Type of this event.' },
      { name: 'Reason', type: 'string', description: 'The reason for the event.' },
      { name: 'Object', type: 'string', description: 'The object this event is about.' },
      { name: 'Message', type: 'string', description: 'A human-readable description.' },
    ],
    cells: (e, now) => [
      humanDuration(now - Date.parse(e.lastTimestamp ?? e.metadata.creationTimestamp)),
      e.type,
      e.reason,
      `${String(e.involvedObject?.kind ?? '').toLowerCase()}/${e.involvedObject?.name ?? ''}`,
      e.message,
    ],
  },
  Namespace: {
    columns: [nameColumn, { name: 'Status', type: 'string', description: 'The status of the namespace.' }, ageColumn],
    cells: (ns, now) => [ns.metadata.name, ns.status?.phase ?? 'Active', age(ns, now)],
  },
  Node: {
    columns: [
      nameColumn,
      { name: 'Status', type: 'string', description: 'The status of the node.' },
      { name: 'Roles', type: 'string', description: 'The roles of the node.' },
      ageColumn,
      { name: 'Version', type: 'string', description: 'Kubelet Version reported by the node.' },
    ],
    cells: (node, now) => [
      node.metadata.name,
      'Ready',
      '<none>',
      age(node, now),
      node.status?.nodeInfo?.kubeletVersion ?? '',
    ],
  },
};

/** True when the request's Accept header asks for server-side printing. */
export function wantsTable(accept: string | undefined): boolean {
  return !!accept && /as=Table/.test(accept) && /g=meta\.k8s\.io/.test(accept);
}

/** A Table of `objects` (with column definitions unless `withColumns` is false, as for later watch events). */
export function toTable(
  objects: KubeObject[],
  resourceVersion: string,
  includeObject: string | null,
  withColumns = true,
) {
  const kind = objects[0]?.kind as string | undefined;
  const printer = (kind && PRINTERS[kind]) || PRINTERS.Namespace;
  const now = Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: withColumns ? printer.columns.map((c) => ({ priority: 0, format: '', ...c })) : [],
    rows: objects.map((obj) => ({
      cells: printer.cells(obj, now),
      object:
        includeObject === 'None'
          ? undefined
          : includeObject === 'Object'
            ? obj
            : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: obj.metadata },
    })),
  };
}

/** Columns only, for a list with no items. */
export function emptyTable(kind: string, resourceVersion: string) {
  const printer = PRINTERS[kind] ?? PRINTERS.Namespace;
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: printer.columns.map((c) => ({ priority: 0, format: '', ...c })),
    rows: [],
  };
}

function age(obj: KubeObject, now: number): string {
  const created = Date.parse(obj.metadata?.creationTimestamp ?? '');
  return Number.isNaN(created) ? '<unknown>' : humanDuration(now - created);
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8)
    return hours % 24 === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  return `${Math.floor(hours / 24)}d`;
}

function jobStatus(job: KubeObject): string {
  const has = (type: string) =>
    ((job.status?.conditions ?? []) as KubeObject[]).some((c) => c.type === type && c.status === 'True');
  if (has('Complete')) return 'Complete';
  if (has('Failed')) return 'Failed';
  if (job.metadata.deletionTimestamp) return 'Terminating';
  if (has('Suspended')) return 'Suspended';
  if (has('FailureTarget')) return 'FailureTarget';
  if (has('SuccessCriteriaMet')) return 'SuccessCriteriaMet';
  return 'Running';
}

/** printPod's READY, STATUS and RESTARTS. */
function podSummary(pod: KubeObject): { ready: number; total: number; reason: string; restarts: number } {
  const status = pod.status ?? {};
  const total = (pod.spec?.containers ?? []).length;
  let reason: string = status.reason || status.phase || 'Pending';
  let restarts = 0;
  let ready = 0;
  let initializing = false;
  const inits = (status.initContainerStatuses ?? []) as KubeObject[];
  for (let i = 0; i < inits.length; i++) {
    const c = inits[i];
    restarts += c.restartCount ?? 0;
    const t = c.state?.terminated;
    const w = c.state?.waiting;
    if (t && t.exitCode === 0) continue;
    if (t)
      reason = t.reason ? `Init:${t.reason}` : t.signal ? `Init:Signal:${t.signal}` : `Init:ExitCode:${t.exitCode}`;
    else if (w?.reason && w.reason !== 'PodInitializing') reason = `Init:${w.reason}`;
    else reason = `Init:${i}/${(pod.spec?.initContainers ?? []).length}`;
    initializing = true;
    break;
  }
  const initialized = ((status.conditions ?? []) as KubeObject[]).some(
    (c) => c.type === 'Initialized' && c.status === 'True',
  );
  if (!initializing || initialized) {
    restarts = 0;
    let hasRunning = false;
    const containers = [...((status.containerStatuses ?? []) as KubeObject[])].reverse();
    for (const c of containers) {
      restarts += c.restartCount ?? 0;
      const t = c.state?.terminated;
      if (c.state?.waiting?.reason) reason = c.state.waiting.reason;
      else if (t?.reason) reason = t.reason;
      else if (t) reason = t.signal ? `Signal:${t.signal}` : `ExitCode:${t.exitCode}`;
      else if (c.ready && c.state?.running) {
        hasRunning = true;
        ready++;
      }
    }
    if (reason === 'Completed' && hasRunning) {
      const podReady = ((status.conditions ?? []) as KubeObject[]).some(
        (c) => c.type === 'Ready' && c.status === 'True',
      );
      reason = podReady ? 'Running' : 'NotReady';
    }
  }
  if (pod.metadata.deletionTimestamp) reason = 'Terminating';
  return { ready, total, reason, restarts };
}
