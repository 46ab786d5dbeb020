// The settings every test (and the benchmark) gives a kubernetes executor pointed at the API double: the local
// images (no registry is reachable here), a short grace period, and the docker tests' small per-job limits.
import { DOCKER_TEST_GIT_IMAGE, DOCKER_TEST_IMAGE } from '../docker.js';

export function kubernetesExecutorEnv(kubeconfig: string, namespace: string): NodeJS.ProcessEnv {
  return {
    EXECUTOR_RUNTIME: 'kubernetes',
    EXECUTOR_KUBERNETES_CONFIG_PATH: kubeconfig,
    EXECUTOR_KUBERNETES_NAMESPACE: namespace,
    EXECUTOR_KUBERNETES_JOB_STEP_IMAGE: DOCKER_TEST_GIT_IMAGE,
    EXECUTOR_KUBERNETES_DEFAULT_IMAGE: DOCKER_TEST_IMAGE,
    EXECUTOR_KUBERNETES_TERMINATION_GRACE_PERIOD: '1s',
    EXECUTOR_JOB_NUM_CPUS: '1',
    EXECUTOR_JOB_MEMORY: '256M',
    EXECUTOR_JOB_DISK: '256M',
  };
}
