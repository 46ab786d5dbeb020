// The kubernetes runtime: one batch/v1 Job per job attempt. The session creates the Job suspended, the Secret (and
// claim) it owns, then resumes it; it follows the pod with a watch, and each container's log while the container
// runs (the setup's, split into the checkout's entries, then each step's). Closing deletes the Job, and the garbage
// collector takes the pod, the Secret and the claim with it. A janitor deletes what an earlier process of this
// executor left (found by label), at start and then periodically.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Logger } from 'pino';
import type { V1Job } from '@kubernetes/client-node';
import { formatDuration, formatSize } from '../../../core/units.js';
import type { JobLimits } from '../../../core/resources.js';
import { checkoutCommands, checkRepositoryUrl, describeCredentials } from '../../workspace/checkout.js';
import {
  JobFailure,
  RuntimeSetupError,
  type CheckResult,
  type JobSession,
  type JobView,
  type PrepareContext,
  type Runtime,
  type StepIO,
  type StepResult,
  type StepRun,
} from '../runtime.js';
import type { RuntimeSettings } from '../settings.js';
import { ApiError, Cluster, isNotFound } from './cluster.js';
import { followContainerLog } from './containerLog.js';
import {
  LABEL_EXECUTOR,
  LABEL_PROBE,
  MAX_SECRET_BYTES,
  SETUP_CONTAINER,
  SCRIPTS,
  WORKSPACE,
  claimManifest,
  jobManifest,
  jobName,
  needsSetup,
  nonNumericUser,
  pullSecretManifest,
  secretKeys,
  secretManifest,
  stepContainer,
  type ManifestContext,
} from './jobManifest.js';
import { isLabelValue, type KubernetesOptions } from './options.js';
import { PodWatch } from './podWatch.js';
import {
  containerStatus,
  hasStarted,
  podDisrupted,
  podEndReason,
  podEnded,
  scriptedFailure,
  unschedulable,
  waitingFailure,
} from './podStatus.js';
import { SetupLogSplitter } from './setupLog.js';

/** The API calls the runtime makes, for `--check` (deploy/kubernetes/base/role.yaml grants exactly these). */
export function requiredAccess(options: KubernetesOptions): { group: string; resource: string; verbs: string[] }[] {
  return [
    { group: 'batch', resource: 'jobs', verbs: ['create', 'get', 'list', 'patch', 'delete'] },
    { group: '', resource: 'pods', verbs: ['list', 'watch'] },
    { group: '', resource: 'pods/log', verbs: ['get'] },
    { group: '', resource: 'secrets', verbs: ['create'] },
    ...(options.volumeType === 'pvc' ? [{ group: '', resource: 'persistentvolumeclaims', verbs: ['create'] }] : []),
  ];
}

/** How long a stop waits for the step's container to end before reporting it stopped (the runtime contract's 2 s). */
const STOP_WAIT_MS = 1_500;

export class KubernetesRuntime implements Runtime {
  readonly name = 'kubernetes';
  /** Jobs this process has open: the janitor leaves them alone. */
  private readonly open_ = new Set<string>();
  private readonly pending = new Set<Promise<unknown>>();
  private janitor?: NodeJS.Timeout;
  private serverVersion?: string;

  private constructor(
    readonly settings: RuntimeSettings,
    readonly options: KubernetesOptions,
    readonly cluster: Cluster,
    readonly log: Logger,
  ) {}

  static async connect(settings: RuntimeSettings, options: KubernetesOptions, log: Logger): Promise<KubernetesRuntime> {
    if (!isLabelValue(settings.executorName))
      throw new RuntimeSetupError(
        `EXECUTOR_NAME=${JSON.stringify(settings.executorName)} cannot label Kubernetes objects`,
        'use at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit',
      );
    const runtime = new KubernetesRuntime(settings, options, Cluster.load(options), log);
    try {
      runtime.serverVersion = await runtime.cluster.version();
    } catch (err) {
      throw new RuntimeSetupError(
        `the Kubernetes API at ${runtime.cluster.server} (from ${runtime.cluster.source}) did not answer: ${(err as Error).message}`,
        'check EXECUTOR_KUBERNETES_CONFIG_PATH (or the in-cluster service account) and that the API server is reachable',
      );
    }
    return runtime;
  }

  version(): Promise<string | undefined> {
    return Promise.resolve(this.serverVersion);
  }

  limits(): JobLimits {
    return {
      cpus: this.options.limitCpus ?? this.settings.jobCpus,
      memoryBytes: this.options.limitMemoryBytes ?? this.settings.jobMemoryBytes,
      diskBytes: this.options.volumeSizeBytes ?? this.settings.jobDiskBytes,
    };
  }

  async open(job: JobView, signal: AbortSignal, opts: { probe?: boolean } = {}): Promise<JobSession> {
    const user = nonNumericUser(job);
    if (user)
      throw new JobFailure(
        'invalid_step',
        `step ${user}: the kubernetes runtime runs steps as numeric users only; give user as "UID" or "UID:GID"`,
      );
    const repo = job.spec.repository;
    if (repo) {
      if (/^file:/i.test(repo.url))
        throw new JobFailure(
          'repository_refused',
          'the kubernetes runtime cannot check out file:// repositories: they are paths on a host its pods do not ' +
            'share (EXECUTOR_ALLOW_LOCAL_REPOSITORIES=true does not change that); use an https://, ssh:// or git:// URL',
        );
      checkRepositoryUrl(repo.url, false);
    }
    const deadlineMs = Math.min(job.maxRuntimeMs ?? 30 * 60_000, (this.options.jobDeadlineSeconds ?? Infinity) * 1000);
    const ctx: ManifestContext = {
      job,
      options: this.options,
      executorName: this.settings.executorName,
      name: jobName(this.settings.executorName, job.id, job.attempt, randomBytes(2).toString('hex')),
      nonce: `@@dockhand:${randomBytes(8).toString('hex')}`,
      deadlineSeconds: Math.max(1, Math.ceil(deadlineMs / 1000)),
      probe: opts.probe,
    };
    const manifest = jobManifest(ctx);
    const size = Object.values(secretManifest(ctx, { metadata: { name: ctx.name, uid: '-' } }).data ?? {}).reduce(
      (n, value) => n + Buffer.from(value, 'base64').length,
      0,
    );
    if (size > MAX_SECRET_BYTES)
      throw new JobFailure(
        'resources_exceeded',
        `the job's step scripts, files and secrets take ${formatSize(size)} as a Secret; Kubernetes holds at most 1Mi in one`,
      );

    const unavailable = (err: unknown) =>
      new JobFailure(
        // 422: the API server found the job's own content invalid (an image name, say); another try would too.
        err instanceof ApiError && err.code === 422 ? 'invalid_step' : 'runtime_unavailable',
        err instanceof ApiError && err.code === 403
          ? `${err.message} (grant it in the executor's Role: see deploy/kubernetes/base/role.yaml)`
          : (err as Error).message,
      );
    const openedAt = Date.now();
    // Marked as this process's own before it exists, so a janitor round that lists it meanwhile leaves it alone.
    this.open_.add(ctx.name);
    let created: V1Job;
    try {
      created = await this.cluster.createJob(manifest);
    } catch (err) {
      this.open_.delete(ctx.name);
      throw unavailable(err);
    }
    const watch = new PodWatch(this.cluster, `job-name=${ctx.name}`, this.log.child({ k8sJob: ctx.name }));
    try {
      await this.cluster.createSecret(secretManifest(ctx, created));
      const pullSecret = pullSecretManifest(ctx, created);
      if (pullSecret) await this.cluster.createSecret(pullSecret);
      if (this.options.volumeType === 'pvc') await this.cluster.createClaim(claimManifest(ctx, created));
      await this.cluster.suspendJob(ctx.name, false);
      await watch.start();
    } catch (err) {
      watch.stop();
      void this.remove(ctx.name);
      if (signal.aborted) throw err;
      throw unavailable(err);
    }
    return new KubernetesSession(this, ctx, watch, openedAt);
  }

  /** Deletes a Job (the garbage collector takes the rest), off the caller's path; the janitor retries failures. */
  remove(name: string): Promise<void> {
    const removal = (this.options.keepJobs ? Promise.resolve() : this.cluster.deleteJob(name))
      .catch((err: Error) => this.log.warn({ job: name, err: err.message }, 'could not delete a Job; the janitor will'))
      .finally(() => {
        this.open_.delete(name);
        this.pending.delete(removal);
      });
    this.pending.add(removal);
    return removal;
  }

  async cleanupOrphans(): Promise<void> {
    this.startJanitor();
    // --check's probe Jobs are another process's (the check runs beside a live executor of the same name).
    const jobs = await this.cluster.listJobs(`${LABEL_EXECUTOR}=${this.settings.executorName},!${LABEL_PROBE}`);
    const orphans = jobs.filter((j) => !this.open_.has(j.metadata!.name!));
    await Promise.all(
      orphans.map(async (job) => {
        const name = job.metadata!.name!;
        if (!this.options.keepJobs) {
          this.log.info({ job: name }, 'deleting a Job an earlier process of this executor left');
          return this.cluster.deleteJob(name);
        }
        // Kept for a look, but not left running: its attempt belongs to no process any more.
        const finished = job.status?.conditions?.some(
          (c) => ['Complete', 'Failed'].includes(c.type) && c.status === 'True',
        );
        if (finished || job.spec?.suspend) return;
        this.log.info({ job: name }, 'suspending a kept Job an earlier process of this executor left running');
        await this.cluster.suspendJob(name, true);
      }),
    );
  }

  private startJanitor(): void {
    if (this.janitor) return;
    this.janitor = setInterval(() => {
      this.cleanupOrphans().catch((err: Error) => this.log.warn({ err: err.message }, 'janitor round failed'));
    }, this.settings.cleanupIntervalMs);
    this.janitor.unref();
  }

  async check(): Promise<CheckResult[]> {
    const results: CheckResult[] = [
      {
        name: 'Kubernetes API',
        ok: true,
        detail: `${this.cluster.server} (from ${this.cluster.source}), Kubernetes ${this.serverVersion}`,
      },
    ];
    const ns = this.options.namespace;
    try {
      await this.cluster.readNamespace();
      results.push({ name: 'namespace', ok: true, detail: `${ns} exists` });
    } catch (err) {
      if (isNotFound(err)) {
        results.push({
          name: 'namespace',
          ok: false,
          detail: `namespace ${ns} does not exist`,
          fix: `create it (kubectl create namespace ${ns}) or set EXECUTOR_KUBERNETES_NAMESPACE`,
        });
        return results;
      }
      // Namespaces are cluster-scoped: the executor's Role cannot read them, and need not. The probe shows it.
      results.push({
        name: 'namespace',
        ok: true,
        detail: `${ns} (not readable with this identity; the probe uses it)`,
      });
    }
    for (const { group, resource, verbs } of requiredAccess(this.options)) {
      const [plain, sub] = resource.split('/');
      const denied: string[] = [];
      for (const verb of verbs) if (!(await this.cluster.allowed(verb, group, plain, sub))) denied.push(verb);
      results.push({
        name: `access to ${resource}`,
        ok: denied.length === 0,
        detail: denied.length ? `not allowed: ${denied.join(', ')}` : `allowed: ${verbs.join(', ')}`,
        fix: denied.length
          ? `grant ${denied.join(', ')} on ${group ? `${group}/` : ''}${resource} in namespace ${ns} to the executor's service account (deploy/kubernetes/base/role.yaml)`
          : undefined,
      });
    }
    if (results.some((r) => !r.ok)) return results;
    results.push(await this.probe());
    return results;
  }

  /** Runs a one-step job through the whole path (Job, Secret, watch, log) and checks that nothing is left. */
  private async probe(): Promise<CheckResult> {
    const started = Date.now();
    const signal = AbortSignal.timeout(this.options.scheduleTimeoutMs + 60_000);
    const job: JobView = {
      id: 0,
      attempt: Date.now() % 100_000,
      queue: 'check',
      namespace: 'check',
      spec: {
        queue: 'check',
        steps: [{ key: 'probe', run: 'echo dockhand-probe-ok' }],
        maxAttempts: 1,
      } as unknown as JobView['spec'],
      secrets: {},
      limits: { cpus: 0, memoryBytes: 0, diskBytes: 0 },
      maxRuntimeMs: 120_000,
    };
    const fix = 'see the message; `kubectl describe job` on a kept Job (EXECUTOR_KUBERNETES_KEEP_JOBS=true) shows more';
    let session: KubernetesSession | undefined;
    try {
      session = (await this.open(job, signal, { probe: true })) as KubernetesSession;
      let output = '';
      const result = await session.runStep(
        { index: 0, step: job.spec.steps[0], env: {} },
        {
          output: (_stream, text) => ((output += text), true),
          outputWritable: async () => undefined,
          note: () => undefined,
          signal,
        },
      );
      if (result.exitCode !== 0 || !output.includes('dockhand-probe-ok'))
        return { name: 'probe job', ok: false, detail: `exit code ${result.exitCode}: ${output.trim()}`, fix };
      await session.close();
      const name = session.name;
      session = undefined;
      const gone = await this.cluster.readJob(name).then(
        () => false,
        (err: unknown) => isNotFound(err),
      );
      return {
        name: 'probe job',
        ok: gone || this.options.keepJobs,
        detail: `ran in ${formatDuration(Date.now() - started)}; ${gone ? 'deleted' : this.options.keepJobs ? 'kept (EXECUTOR_KUBERNETES_KEEP_JOBS)' : 'still there after its deletion'}`,
        fix: gone ? undefined : "allow delete on batch/jobs; check the cluster's garbage collector",
      };
    } catch (err) {
      return { name: 'probe job', ok: false, detail: (err as Error).message, fix };
    } finally {
      await session?.close();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.janitor);
    await Promise.all([...this.pending]);
  }
}

class KubernetesSession implements JobSession {
  private closed = false;
  private stopping?: Promise<void>;

  constructor(
    private readonly runtime: KubernetesRuntime,
    private readonly ctx: ManifestContext,
    private readonly watch: PodWatch,
    private readonly createdAt: number,
  ) {}

  get name(): string {
    return this.ctx.name;
  }

  async prepare(ctx: PrepareContext): Promise<void> {
    if (!needsSetup(this.ctx.job)) return;
    const repo = this.ctx.job.spec.repository;
    const commands = new Map<string, string[]>(
      (repo ? checkoutCommands(repo) : []).map((c) => [c.key, ['git', ...c.shown]]),
    );
    const files = Object.keys(this.ctx.job.spec.files ?? {}).length;
    commands.set('setup.files', ['write', `${files} file(s)`]);
    const splitter = new SetupLogSplitter(
      this.ctx.nonce,
      ctx.log,
      (key) => commands.get(key) ?? [key],
      (key) => (key === 'setup.git.fetch' && repo ? describeCredentials(repo) : undefined),
    );
    const end = await this.runContainer(
      SETUP_CONTAINER,
      { output: (text) => splitter.feed(text), writable: async () => undefined },
      ctx.signal,
    );
    splitter.end(end.exitCode);
    if (end.stopped) throw new JobFailure('canceled', 'stopped while preparing the workspace');
    if (end.exitCode === 0) return;
    const scripted = scriptedFailure(end.message);
    if (scripted) throw scripted;
    if (end.failure) throw new JobFailure(end.failure, end.reason ?? 'the setup container failed');
    throw new JobFailure(
      'system_failure',
      `the setup container exited with ${end.exitCode}${end.reason ? ` (${end.reason})` : ''}`,
    );
  }

  describeStep(run: StepRun): string[] {
    return [
      'kubernetes',
      `job/${this.ctx.name}`,
      `container=${stepContainer(run.index)}`,
      `image=${run.step.image ?? this.runtime.options.defaultImage}`,
      `dir=${path.posix.join(WORKSPACE, run.step.dir ?? '.')}`,
      '/bin/sh',
      '-e',
      `${SCRIPTS}/${secretKeys.step(run.index)}`,
    ];
  }

  async runStep(run: StepRun, io: StepIO): Promise<StepResult> {
    const end = await this.runContainer(
      stepContainer(run.index),
      { output: (text) => io.output('stdout', text), writable: io.outputWritable, note: io.note },
      io.signal,
    );
    if (end.exitCode === 126) {
      const scripted = scriptedFailure(end.message);
      if (scripted?.reason === 'invalid_workspace') throw scripted;
    }
    return { exitCode: end.exitCode, reason: end.reason, failure: end.failure };
  }

  /**
   * Waits for a container to start (failing on what will not cure itself: no node in time, an image that cannot
   * be pulled, a pod that ended), follows its log until it ends, and says how it ended.
   */
  private async runContainer(
    name: string,
    reader: { output(text: string): boolean; writable(): Promise<void>; note?(line: string): void },
    signal: AbortSignal,
  ): Promise<StepResult & { message?: string; stopped?: boolean }> {
    const { options } = this.runtime;
    const watch = this.watch;
    let noted = false;
    // Until the container starts.
    for (;;) {
      if (signal.aborted) return this.stop(name);
      const pod = watch.pod;
      const status = containerStatus(pod, name);
      if (hasStarted(status)) break;
      const failed = waitingFailure(status);
      if (failed) throw failed;
      const ended = podEndReason(pod, this.diskText());
      if (ended) return { exitCode: 137, ...ended };
      if (podEnded(pod) || watch.podDeleted)
        throw new JobFailure(
          'system_failure',
          `the job's pod ended before container ${name} started: ${pod?.status?.message ?? pod?.status?.reason ?? (watch.podDeleted ? 'it was deleted' : 'no reason given')}`,
        );
      const waiting = Date.now() - this.createdAt;
      const scheduler = unschedulable(pod);
      if (scheduler && !noted) {
        reader.note?.(`[dockhand] waiting for a node: ${scheduler}`);
        noted = true;
      }
      if ((scheduler || !pod) && waiting > options.scheduleTimeoutMs)
        throw new JobFailure(
          'unschedulable',
          `the job's pod was not scheduled within ${formatDuration(options.scheduleTimeoutMs)} (EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT): ${scheduler ?? 'the Job made no pod'}`,
        );
      await watch.changed(signal, 1_000);
    }

    const podName = watch.pod!.metadata!.name!;
    const terminated = () => this.containerEnded(name);
    try {
      await followContainerLog(this.runtime.cluster, reader, {
        pod: podName,
        container: name,
        terminated,
        changed: (ms) => watch.changed(signal, ms),
        // The pod is gone (what its log held is lost with it), or the log may not be read at all.
        fatal: (err: ApiError) => [401, 403, 404].includes(err.code) || watch.podDeleted,
        signal,
      });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      if (err.code === 401 || err.code === 403)
        throw new JobFailure('runtime_unavailable', `reading the log of ${name}: ${err.message}`);
      reader.note?.(`[dockhand] the rest of this step's log could not be read: ${err.message}`);
    }
    if (signal.aborted) return this.stop(name);
    for (let i = 0; i < 20 && !terminated(); i++) await watch.changed(signal, 500);
    const term = containerStatus(watch.pod, name)?.state?.terminated;
    // A container that ended well ended well, whatever became of its pod after.
    if (term?.exitCode === 0 && term.reason !== 'OOMKilled') return { exitCode: 0, message: term.message };
    const ended = podEndReason(watch.pod, this.diskText());
    if (ended) return { exitCode: term?.exitCode ?? 137, ...ended };
    // Deleted or disrupted under the step by someone else (a drain, a scale-down, preemption): not the step's doing.
    const disrupted = podDisrupted(watch.pod, watch.podDeleted);
    if (disrupted && !this.stopping)
      return { exitCode: term?.exitCode ?? 137, reason: disrupted, failure: 'system_failure' };
    if (!term) throw new JobFailure('system_failure', `container ${name} of pod ${podName} vanished before it ended`);
    // The runtime could not start the process at all (a dir that is a file, an image without /bin/sh).
    if (term.reason === 'StartError' || term.reason === 'ContainerCannotRun')
      throw new JobFailure('invalid_step', `container ${name} could not start: ${term.message ?? term.reason}`);
    if (term.reason === 'OOMKilled')
      return {
        exitCode: term.exitCode || 137,
        reason: `killed: out of memory (limit ${formatSize(this.ctx.job.limits.memoryBytes)})`,
        failure: 'out_of_memory',
        message: term.message,
      };
    return { exitCode: term.exitCode, message: term.message };
  }

  /** Whether the container has ended, or cannot run any more (its pod ended or is gone). */
  private containerEnded(name: string): boolean {
    const pod = this.watch.pod;
    return !!containerStatus(pod, name)?.state?.terminated || this.watch.podDeleted || podEnded(pod);
  }

  private diskText(): string {
    const bytes = this.ctx.job.limits.diskBytes;
    return bytes ? formatSize(bytes) : 'no limit set';
  }

  /** Stops the job's pod (deleting its Job) and waits, a little past its grace period, for the container to end. */
  private async stop(name: string): Promise<StepResult & { stopped: true }> {
    // A kept Job (EXECUTOR_KUBERNETES_KEEP_JOBS) is suspended instead: its controller deletes the running pod.
    this.stopping ??= this.runtime.options.keepJobs ? this.suspend() : this.runtime.remove(this.ctx.name);
    await this.stopping;
    // The pod has its grace period to end; the step is reported stopped after at most STOP_WAIT_MS of it.
    const deadline = Date.now() + Math.min(this.runtime.options.terminationGracePeriodSeconds * 1000, STOP_WAIT_MS);
    while (Date.now() < deadline) {
      if (this.containerEnded(name) || !this.watch.pod) break;
      await this.watch.changed(undefined, 500);
    }
    const term = containerStatus(this.watch.pod, name)?.state?.terminated;
    return { exitCode: term?.exitCode || 137, reason: 'stopped', stopped: true };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const unfinished = !podEnded(this.watch.pod);
    this.watch.stop();
    if (this.runtime.options.keepJobs) {
      // A kept Job whose pod still runs (the job failed before its end) must not run on unseen: suspend it.
      if (unfinished && !this.stopping) await this.suspend();
      return;
    }
    await (this.stopping ?? this.runtime.remove(this.ctx.name));
  }

  private suspend(): Promise<void> {
    return this.runtime.cluster.suspendJob(this.ctx.name, true).then(
      () => undefined,
      (err: Error) => this.runtime.log.warn({ job: this.ctx.name, err: err.message }, 'could not stop a kept Job'),
    );
  }
}
