// What a job pod's status means for Dockhand: a container's state, and the pod-level reasons (a deadline, an
// eviction, a scheduler that finds no node, an image that cannot be pulled) as typed failures.
import type { V1ContainerStatus, V1Pod } from '@kubernetes/client-node';
import type { FailureReason } from '../../../core/failureReasons.js';
import { formatDuration } from '../../../core/units.js';
import { JobFailure } from '../runtime.js';

export function containerStatus(pod: V1Pod | undefined, name: string): V1ContainerStatus | undefined {
  const s = pod?.status;
  return [...(s?.initContainerStatuses ?? []), ...(s?.containerStatuses ?? [])].find((c) => c.name === name);
}

export const hasStarted = (c: V1ContainerStatus | undefined): boolean => !!(c?.state?.running || c?.state?.terminated);

/** Whether the pod has ended, so none of its containers will run again. */
export const podEnded = (pod: V1Pod | undefined): boolean =>
  pod?.status?.phase === 'Failed' || pod?.status?.phase === 'Succeeded';

/** The scheduler's word on a pod it has not placed, or undefined once it is placed. */
export function unschedulable(pod: V1Pod | undefined): string | undefined {
  const condition = pod?.status?.conditions?.find((c) => c.type === 'PodScheduled');
  if (condition?.status === 'False' && condition.reason === 'Unschedulable')
    return condition.message || 'no node fits the pod';
  return undefined;
}

/** An image pull's failure by what the kubelet said: missing, refused, or the registry failing. */
function pullFailure(message: string): FailureReason {
  if (/not found|manifest unknown|does not exist|no such image|name unknown/i.test(message)) {
    // "pull access denied … repository does not exist or may require 'docker login'": it may exist, unreadable.
    return /denied|unauthori[sz]ed|authentication required|may require/i.test(message)
      ? 'image_pull_denied'
      : 'image_not_found';
  }
  if (/denied|unauthori[sz]ed|forbidden|authentication required|no basic auth credentials|401|403/i.test(message))
    return 'image_pull_denied';
  return 'image_pull_failure';
}

/** A container stuck before starting, for a reason waiting will not cure; undefined while it may still start. */
export function waitingFailure(c: V1ContainerStatus | undefined): JobFailure | undefined {
  const waiting = c?.state?.waiting;
  if (!waiting?.reason) return undefined;
  const said = waiting.message ? `: ${waiting.message}` : '';
  switch (waiting.reason) {
    case 'ErrImagePull':
    case 'ImagePullBackOff':
    case 'ErrImageNeverPull':
      return new JobFailure(
        pullFailure(`${waiting.reason} ${waiting.message ?? ''}`),
        `image ${c?.image} could not be pulled (${waiting.reason}${said})`,
      );
    // The image name itself, or the container's settings against the image (a non-numeric USER with a run-as
    // policy, say): the job's own, so another attempt would meet it again.
    case 'InvalidImageName':
    case 'CreateContainerConfigError':
      return new JobFailure('invalid_step', `container ${c?.name} could not be configured${said}`);
    case 'CreateContainerError':
    case 'RunContainerError':
    case 'StartError':
      return new JobFailure('invalid_step', `container ${c?.name} could not start${said}`);
    default:
      return undefined;
  }
}

/** Why a pod ended before its containers did: a deadline or an eviction, with the job's failure reason. */
export function podEndReason(
  pod: V1Pod | undefined,
  diskText: string,
): { reason: string; failure: FailureReason } | undefined {
  const status = pod?.status;
  if (status?.reason === 'DeadlineExceeded') {
    const deadline = pod?.spec?.activeDeadlineSeconds;
    return {
      reason: `the pod ran past its deadline${deadline ? ` of ${formatDuration(deadline * 1000)}` : ''} (DeadlineExceeded)`,
      failure: 'job_timeout',
    };
  }
  if (status?.reason === 'Evicted') {
    const message = status.message ?? 'evicted';
    // The kubelet evicts a pod whose workspace emptyDir outgrows its sizeLimit: the job's disk is full. A node
    // short of disk ("The node was low on resource: ephemeral-storage") is no fault of the job's.
    if (/EmptyDir volume "workspace"|exceeded its local ephemeral storage limit/i.test(message))
      return { reason: `the job's disk is full (${diskText}; evicted: ${message})`, failure: 'out_of_disk' };
    return { reason: `the pod was evicted: ${message}`, failure: 'system_failure' };
  }
  return undefined;
}

/** The step-failure a termination message (written by the runtime's own scripts) asks for, if any. */
export function scriptedFailure(message: string | undefined): JobFailure | undefined {
  const m = /^(invalid_workspace|checkout_failure|out_of_disk|system_failure): ([^]*)$/.exec(message ?? '');
  return m ? new JobFailure(m[1] as FailureReason, m[2]) : undefined;
}

/** Why a pod was taken from under a running step by someone else (a drain, a scale-down, preemption), if it was. */
export function podDisrupted(pod: V1Pod | undefined, deleted: boolean): string | undefined {
  const target = pod?.status?.conditions?.find((c) => c.type === 'DisruptionTarget' && c.status === 'True');
  if (target)
    return `the pod was disrupted (${target.reason ?? 'DisruptionTarget'}${target.message ? `: ${target.message}` : ''})`;
  if (deleted || pod?.metadata?.deletionTimestamp) return 'the pod was deleted while the step ran';
  return undefined;
}
