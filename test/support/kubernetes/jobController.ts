// The Job controller for batch/v1 Jobs with one pod at a time (completions and parallelism 1): creates the pod
// from the template, counts finished pods through the job-tracking finalizer, retries failures with back-off up
// to backoffLimit, enforces activeDeadlineSeconds, suspends and resumes, writes the status as the real controller
// does (two-step terminal conditions), and deletes finished Jobs after ttlSecondsAfterFinished.
import type { EventRecorder } from './events.js';
import type { ObjectStore } from './objectStore.js';
import { JOB_TRACKING_FINALIZER, type Registry } from './registry.js';
import { ApiError } from './status.js';
import { clone, sameJson, timestamp, type KubeObject } from './util.js';
import { WorkQueue } from './controllerQueue.js';

const SOURCE = { component: 'job-controller' };
const MAX_BACKOFF_MS = 6 * 60 * 1000;
const ORPHAN = 'orphan:';

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
  lastProbeTime?: string;
  lastTransitionTime?: string;
}

export function controllerOf(obj: Readonly<KubeObject>): KubeObject | undefined {
  return ((obj.metadata.ownerReferences ?? []) as KubeObject[]).find((r) => r.controller === true);
}

function isTerminal(pod: Readonly<KubeObject>): boolean {
  return pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';
}

/** A pod the Job counts as failed: Failed, or deleted before it ever ran anywhere. */
function countsAsFailed(pod: Readonly<KubeObject>): boolean {
  if (pod.status?.phase === 'Failed') return true;
  return !!pod.metadata.deletionTimestamp && !pod.spec?.nodeName && pod.status?.phase !== 'Succeeded';
}

function hasCondition(job: Readonly<KubeObject>, type: string): boolean {
  return ((job.status?.conditions ?? []) as Condition[]).some((c) => c.type === type && c.status === 'True');
}

function condition(job: Readonly<KubeObject>, type: string): Condition | undefined {
  return ((job.status?.conditions ?? []) as Condition[]).find((c) => c.type === type);
}

export class JobController {
  private readonly queue = new WorkQueue('job controller', (key) => this.sync(key));
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private unsubscribe = () => {};

  constructor(
    private readonly registry: Registry,
    private readonly store: ObjectStore,
    private readonly events: EventRecorder,
    private readonly backoffBaseMs: number,
  ) {}

  start(): void {
    this.unsubscribe = this.store.subscribe((e) => {
      if (e.resource === 'jobs') this.queue.add(`${e.object.metadata.namespace}/${e.object.metadata.name}`);
      if (e.resource === 'pods') {
        const owner = controllerOf(e.object);
        if (owner?.kind === 'Job') this.queue.add(`${e.object.metadata.namespace}/${owner.name}`);
        // A pod orphaned (its Job deleted with propagationPolicy=Orphan) is let go of.
        if (!owner && e.type !== 'DELETED' && e.object.metadata.finalizers?.includes(JOB_TRACKING_FINALIZER)) {
          this.queue.add(`${ORPHAN}${e.object.metadata.namespace}/${e.object.metadata.name}`);
        }
      }
    });
  }

  stop(): void {
    this.unsubscribe();
    this.queue.close();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** Looks at the Job again after `ms` (deadline, back-off, TTL). The earliest wake-up wins. */
  private wakeAfter(key: string, ms: number): void {
    const existing = this.timers.get(key) as (NodeJS.Timeout & { at?: number }) | undefined;
    const at = Date.now() + Math.max(0, ms);
    if (existing?.at !== undefined && existing.at <= at && existing.at > Date.now()) return;
    clearTimeout(existing);
    const timer = setTimeout(
      () => {
        this.timers.delete(key);
        this.queue.add(key);
      },
      Math.max(0, ms) + 5,
    ) as NodeJS.Timeout & { at?: number };
    timer.at = at;
    this.timers.set(key, timer);
  }

  private sync(key: string): void {
    if (key.startsWith(ORPHAN)) {
      const [namespace, name] = key.slice(ORPHAN.length).split('/');
      const pod = this.store.peek('pods', namespace, name);
      if (pod && !controllerOf(pod)) this.registry.removeFinalizer('pods', namespace, name, JOB_TRACKING_FINALIZER);
      return;
    }
    const [namespace, name] = key.split('/');
    const job = this.store.get('jobs', namespace, name);
    const pods = this.store
      .list('pods', namespace, true)
      .filter((p) => controllerOf(p)?.kind === 'Job' && controllerOf(p)?.name === name);
    // Pods of a Job that is gone (or of an older Job of the same name) are not counted: just let them go.
    for (const pod of pods) {
      if (pod.metadata.finalizers?.includes(JOB_TRACKING_FINALIZER) && controllerOf(pod)?.uid !== job?.metadata.uid) {
        this.registry.removeFinalizer('pods', namespace, pod.metadata.name, JOB_TRACKING_FINALIZER);
      }
    }
    if (!job) {
      clearTimeout(this.timers.get(key));
      this.timers.delete(key);
      return;
    }
    const own = pods.filter((p) => controllerOf(p)?.uid === job.metadata.uid);
    const now = Date.now();
    const status: KubeObject = clone(job.status ?? {});
    const finished = hasCondition(job, 'Complete') || hasCondition(job, 'Failed');

    // Finished pods still holding the tracking finalizer are counted once, then released.
    const uncounted = own.filter((p) => p.metadata.finalizers?.includes(JOB_TRACKING_FINALIZER));
    const newlySucceeded = uncounted.filter((p) => p.status?.phase === 'Succeeded');
    const newlyFailed = uncounted.filter(countsAsFailed);
    if (!finished) {
      status.succeeded = (status.succeeded ?? 0) + newlySucceeded.length;
      status.failed = (status.failed ?? 0) + newlyFailed.length;
    }
    const active = own.filter((p) => !isTerminal(p) && !p.metadata.deletionTimestamp);
    const terminating = own.filter((p) => !isTerminal(p) && p.metadata.deletionTimestamp && !countsAsFailed(p));

    const conditions = (status.conditions ??= []) as Condition[];
    const addCondition = (type: string, reason: string, message: string, value = 'True') => {
      const at = conditions.findIndex((c) => c.type === type);
      const t = timestamp();
      const next = { type, status: value, lastProbeTime: t, lastTransitionTime: t, reason, message };
      if (at === -1) conditions.push(next);
      else if (conditions[at].status !== value || conditions[at].reason !== reason) conditions[at] = next;
    };
    const deletePods = (list: Readonly<KubeObject>[]) => {
      for (const pod of list) this.deletePod(namespace, pod.metadata.name);
    };

    let created = 0;
    if (!finished && !job.metadata.deletionTimestamp) {
      const failureTarget = condition(job, 'FailureTarget');
      if (job.spec.suspend && !failureTarget && !hasCondition(job, 'SuccessCriteriaMet')) {
        deletePods(active);
        if (!hasCondition(job, 'Suspended')) {
          addCondition('Suspended', 'JobSuspended', 'Job suspended');
          this.events.record(job, 'Normal', 'Suspended', 'Job suspended', SOURCE);
        }
      } else if (failureTarget?.status === 'True') {
        // Step two of failing: Failed only once no pod is left running or terminating.
        deletePods(active);
        if (active.length === 0 && terminating.length === 0) {
          addCondition('Failed', failureTarget.reason, failureTarget.message);
        }
      } else if (hasCondition(job, 'SuccessCriteriaMet')) {
        if (active.length === 0 && terminating.length === 0) {
          addCondition('Complete', 'CompletionsReached', 'Reached expected number of succeeded pods');
          status.completionTime = timestamp();
          this.events.record(job, 'Normal', 'Completed', 'Job completed', SOURCE);
        }
      } else {
        if (hasCondition(job, 'Suspended')) {
          // Resuming restarts the clock of activeDeadlineSeconds.
          addCondition('Suspended', 'JobResumed', 'Job resumed', 'False');
          status.startTime = timestamp();
          this.events.record(job, 'Normal', 'Resumed', 'Job resumed', SOURCE);
        }
        status.startTime ??= timestamp();
        const deadline = job.spec.activeDeadlineSeconds;
        const deadlineAt = deadline === undefined ? undefined : Date.parse(status.startTime) + deadline * 1000;
        const failure =
          deadlineAt !== undefined && now >= deadlineAt
            ? { reason: 'DeadlineExceeded', message: 'Job was active longer than specified deadline' }
            : this.pastBackoffLimit(job, status, active)
              ? { reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' }
              : undefined;
        if (failure) {
          // Step one: FailureTarget; the pods are deleted and Failed follows once they are gone.
          addCondition('FailureTarget', failure.reason, failure.message);
          deletePods(active);
          this.events.record(job, 'Warning', failure.reason, failure.message, SOURCE);
          this.queue.add(key);
        } else if ((status.succeeded ?? 0) >= (job.spec.completions ?? 1)) {
          addCondition('SuccessCriteriaMet', 'CompletionsReached', 'Reached expected number of succeeded pods');
          this.queue.add(key);
        } else {
          const wanted = Math.min(job.spec.parallelism ?? 1, (job.spec.completions ?? 1) - (status.succeeded ?? 0));
          const replaceable = job.spec.podReplacementPolicy === 'Failed' ? terminating.length : 0;
          const missing = wanted - active.length - replaceable;
          if (missing > 0) {
            const readyAt = this.retryAt(status, own);
            if (readyAt > now) this.wakeAfter(key, readyAt - now);
            else for (let i = 0; i < missing; i++) if (this.createPod(job)) created++;
          }
          if (deadlineAt !== undefined) this.wakeAfter(key, deadlineAt - now);
        }
      }
    }

    status.active = active.length + created;
    status.ready = active.filter((p) =>
      ((p.status?.conditions ?? []) as KubeObject[]).some((c) => c.type === 'Ready' && c.status === 'True'),
    ).length;
    status.terminating = terminating.length;
    status.uncountedTerminatedPods = {};
    for (const f of ['active', 'succeeded', 'failed'] as const) if (!status[f]) delete status[f];
    if (conditions.length === 0) delete status.conditions;

    if (!sameJson(status, job.status ?? {})) {
      this.registry.mutate('jobs', namespace, name, (j) => {
        j.status = status;
      });
    }
    for (const pod of [...newlySucceeded, ...newlyFailed]) {
      this.registry.removeFinalizer('pods', namespace, pod.metadata.name, JOB_TRACKING_FINALIZER);
    }
    // Once finished, pods still holding the finalizer (they ended after the Job did) are released uncounted.
    if (finished) {
      for (const pod of uncounted) {
        if (isTerminal(pod) || pod.metadata.deletionTimestamp)
          this.registry.removeFinalizer('pods', namespace, pod.metadata.name, JOB_TRACKING_FINALIZER);
      }
      this.expireAfterTtl(key, job);
    }
  }

  /** Never: `failed` passed backoffLimit. OnFailure: the container restarts of running pods did (controller logic). */
  private pastBackoffLimit(job: KubeObject, status: KubeObject, active: Readonly<KubeObject>[]): boolean {
    const limit = job.spec.backoffLimit ?? 6;
    if (job.spec.template?.spec?.restartPolicy === 'OnFailure') {
      let restarts = 0;
      for (const pod of active) {
        for (const s of [
          ...(pod.status?.initContainerStatuses ?? []),
          ...(pod.status?.containerStatuses ?? []),
        ] as KubeObject[]) {
          restarts += s.restartCount ?? 0;
        }
      }
      if (limit === 0 ? restarts > 0 : restarts >= limit) return true;
    }
    return (status.failed ?? 0) > limit;
  }

  /** When the next pod may be created: 10s, 20s, 40s … (capped at 6 min) after the last failure. */
  private retryAt(status: KubeObject, pods: Readonly<KubeObject>[]): number {
    const failures = status.failed ?? 0;
    if (failures === 0) return 0;
    let lastFailure = 0;
    for (const pod of pods) {
      if (pod.status?.phase !== 'Failed') continue;
      for (const s of (pod.status.containerStatuses ?? []) as KubeObject[]) {
        const at = Date.parse(s.state?.terminated?.finishedAt ?? '');
        if (!Number.isNaN(at)) lastFailure = Math.max(lastFailure, at);
      }
      if (lastFailure === 0) lastFailure = Date.parse(pod.metadata.deletionTimestamp ?? pod.metadata.creationTimestamp);
    }
    const delay = Math.min(this.backoffBaseMs * 2 ** (failures - 1), MAX_BACKOFF_MS);
    return lastFailure + delay;
  }

  private createPod(job: KubeObject): boolean {
    const template = job.spec.template;
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        generateName: `${job.metadata.name}-`,
        labels: { ...(template.metadata?.labels ?? {}) },
        ...(template.metadata?.annotations ? { annotations: { ...template.metadata.annotations } } : {}),
        ownerReferences: [
          {
            apiVersion: 'batch/v1',
            kind: 'Job',
            name: job.metadata.name,
            uid: job.metadata.uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
        finalizers: [JOB_TRACKING_FINALIZER],
      },
      spec: clone(template.spec),
    };
    try {
      const created = this.registry.create('pods', job.metadata.namespace, pod);
      this.events.record(job, 'Normal', 'SuccessfulCreate', `Created pod: ${created.metadata.name}`, SOURCE);
      return true;
    } catch (err) {
      const message = err instanceof ApiError ? err.message : String(err);
      this.events.record(job, 'Warning', 'FailedCreate', `Error creating: ${message}`, SOURCE);
      return false;
    }
  }

  private deletePod(namespace: string, name: string): void {
    try {
      this.registry.delete('pods', namespace, name, { propagationPolicy: 'Background' });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }

  /** The TTL-after-finished controller: deletes the Job (in the foreground) that long after it finished. */
  private expireAfterTtl(key: string, job: KubeObject): void {
    const ttl = job.spec.ttlSecondsAfterFinished;
    if (ttl === undefined || job.metadata.deletionTimestamp) return;
    const finishedAt = ((job.status?.conditions ?? []) as Condition[])
      .filter((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True')
      .map((c) => Date.parse(c.lastTransitionTime ?? ''))[0];
    if (finishedAt === undefined || Number.isNaN(finishedAt)) return;
    const due = finishedAt + ttl * 1000;
    if (Date.now() < due) return this.wakeAfter(key, due - Date.now());
    try {
      this.registry.delete('jobs', job.metadata.namespace, job.metadata.name, {
        propagationPolicy: 'Foreground',
        preconditions: { uid: job.metadata.uid },
      });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
  }
}
