// The kubelet of the double's one node: runs each pod bound to it in Docker. A pod gets a sandbox container
// (holding the pod's network and IPC namespaces, as a pause container does), its volumes, its init containers one
// after another and then its containers; the kubelet writes the pod status at every step, enforces
// activeDeadlineSeconds and emptyDir sizeLimit (eviction), and stops containers gracefully on deletion.
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type Docker from 'dockerode';
import { ContainerConfigError, containerCreateOptions, resolveEnv } from './containerConfig.js';
import {
  CONTAINER_NAME_LABEL,
  POD_NAME_LABEL,
  POD_NAMESPACE_LABEL,
  POD_UID_LABEL,
  removeContainer,
  removeVolume,
  INSTANCE_LABEL,
} from './dockerResources.js';
import type { EventRecorder } from './events.js';
import type { ObjectStore } from './objectStore.js';
import { buildPodStatus, type ContainerRecord, type PodRuntime } from './podStatus.js';
import type { Registry } from './registry.js';
import { ApiError } from './status.js';
import { dockerStatus, errorText, sleep, timestamp, type KubeObject } from './util.js';
import { PodVolumes, removeTree, type MountSource, type PvcVolumes } from './volumes.js';

export interface KubeletOptions {
  docker: Docker;
  registry: Registry;
  store: ObjectStore;
  events: EventRecorder;
  nodeName: string;
  hostAddress: string;
  network: string;
  instance: string;
  labels: Record<string, string>;
  tmpRoot: string;
  housekeepingIntervalMs: number;
  backoffBaseMs: number;
  sandboxImage: string;
}

const MAX_RESTART_BACKOFF_MS = 5 * 60 * 1000;
const MAX_PULL_BACKOFF_MS = 5 * 60 * 1000;
const MAX_TERMINATION_MESSAGE = 4096;

export class Kubelet implements PvcVolumes {
  private readonly workers = new Map<string, PodWorker>();
  private readonly claimVolumes = new Map<string, { name: string; hostPath: string }>();
  private readonly volumesToRemove = new Set<string>();
  private unsubscribe = () => {};
  private housekeeping?: NodeJS.Timeout;
  closing = false;

  constructor(readonly o: KubeletOptions) {}

  start(): void {
    this.unsubscribe = this.o.store.subscribe((e) => {
      if (this.closing) return;
      if (e.resource === 'pods') {
        const uid = e.object.metadata.uid as string;
        if (e.type === 'DELETED') {
          this.workers.get(uid)?.removed();
          return;
        }
        if (e.object.spec?.nodeName !== this.o.nodeName) return;
        let worker = this.workers.get(uid);
        if (!worker) {
          worker = new PodWorker(this, e.object);
          this.workers.set(uid, worker);
        }
        worker.update(e.object);
      } else if (e.resource === 'secrets' || e.resource === 'persistentvolumeclaims') {
        // Pods waiting for a Secret (volume or env) or a claim look again at once.
        for (const w of this.workers.values()) w.wake();
        if (e.resource === 'persistentvolumeclaims' && e.type === 'DELETED')
          void this.releaseClaim(e.object.metadata.uid);
      }
    });
    this.housekeeping = setInterval(() => {
      for (const w of this.workers.values()) void w.housekeep();
    }, this.o.housekeepingIntervalMs);
  }

  /** The Docker volume behind a claim, made on first use; like a local-path volume, it starts world-writable. */
  async volumeFor(pvc: Readonly<KubeObject>): Promise<{ name: string; hostPath: string }> {
    const uid = pvc.metadata.uid as string;
    const known = this.claimVolumes.get(uid);
    if (known) return known;
    const name = `kube-double-${this.o.instance}-pvc-${uid}`;
    const volume = await this.o.docker.createVolume({
      Name: name,
      Labels: {
        ...this.o.labels,
        'io.kubernetes.pvc.name': pvc.metadata.name,
        'io.kubernetes.pvc.namespace': pvc.metadata.namespace,
      },
    });
    const info = (await this.o.docker.getVolume(volume.name).inspect()) as { Mountpoint: string };
    await chmod(info.Mountpoint, 0o777).catch(() => {});
    const backing = { name, hostPath: info.Mountpoint };
    this.claimVolumes.set(uid, backing);
    return backing;
  }

  /** The claim is gone: its volume goes too (reclaim policy Delete), once no container holds it. */
  private async releaseClaim(uid: string): Promise<void> {
    const backing = this.claimVolumes.get(uid);
    if (!backing) return;
    this.claimVolumes.delete(uid);
    if (!(await removeVolume(this.o.docker, backing.name).catch(() => false))) this.volumesToRemove.add(backing.name);
  }

  async retryVolumeRemovals(): Promise<void> {
    for (const name of [...this.volumesToRemove]) {
      if (await removeVolume(this.o.docker, name).catch(() => false)) this.volumesToRemove.delete(name);
    }
  }

  forget(uid: string): void {
    this.workers.delete(uid);
  }

  async close(): Promise<void> {
    this.closing = true;
    this.unsubscribe();
    clearInterval(this.housekeeping);
    await Promise.all([...this.workers.values()].map((w) => w.shutdown()));
  }
}

type StopReason = 'deleted' | 'deadline' | 'evicted' | 'removed' | 'closing';

/** One pod on this node, from admission until its object is gone. */
class PodWorker {
  private pod: KubeObject;
  private readonly uid: string;
  private readonly rt: PodRuntime;
  private readonly dir: string;
  private readonly volumes: PodVolumes;
  private mounts = new Map<string, MountSource>();
  private sandboxId?: string;
  private stopping?: { reason: StopReason; grace: number };
  private readonly stopSignal = new AbortController();
  private wakeSignal = new AbortController();
  /** Containers running now, by container name. */
  private readonly running = new Map<string, string>();
  private done = false;
  private gone = false;
  private readonly finished: Promise<void>;
  private deadlineTimer?: NodeJS.Timeout;
  private armedDeadline?: number;
  private measuring = false;

  constructor(
    private readonly kubelet: Kubelet,
    pod: KubeObject,
  ) {
    this.pod = pod;
    this.uid = pod.metadata.uid;
    this.dir = path.join(kubelet.o.tmpRoot, 'pods', this.uid);
    this.volumes = new PodVolumes(this.dir, kubelet.o.store, kubelet);
    const hasInit = (pod.spec.initContainers ?? []).length > 0;
    const record = (c: KubeObject, init: boolean): ContainerRecord => ({
      name: c.name,
      image: c.image,
      init,
      state: { waiting: { reason: init || hasInit ? 'PodInitializing' : 'ContainerCreating' } },
      lastState: {},
      restartCount: 0,
    });
    this.rt = {
      startTime: timestamp(),
      hostIP: kubelet.o.hostAddress,
      sandboxReady: false,
      finalized: false,
      init: ((pod.spec.initContainers ?? []) as KubeObject[]).map((c) => record(c, true)),
      main: ((pod.spec.containers ?? []) as KubeObject[]).map((c) => record(c, false)),
    };
    this.finished = this.run();
  }

  private get o(): KubeletOptions {
    return this.kubelet.o;
  }

  private get podRef(): string {
    return `${this.pod.metadata.name}_${this.pod.metadata.namespace}(${this.uid})`;
  }

  update(pod: KubeObject): void {
    this.pod = pod;
    if (pod.metadata.deletionTimestamp) {
      if (this.done) this.deleteFinally();
      else this.requestStop('deleted', pod.metadata.deletionGracePeriodSeconds ?? 0);
    }
    this.armDeadline();
    this.wake();
  }

  wake(): void {
    const previous = this.wakeSignal;
    this.wakeSignal = new AbortController();
    previous.abort();
  }

  /** The pod object is gone: kill what runs, then remove its containers and files. */
  removed(): void {
    this.gone = true;
    this.requestStop('removed', 0);
    void this.finished.then(async () => {
      await this.cleanUp();
      this.kubelet.forget(this.uid);
      await this.kubelet.retryVolumeRemovals();
    });
  }

  /** The double closes: stop at once, write nothing more. */
  async shutdown(): Promise<void> {
    this.gone = true;
    this.requestStop('closing', 0);
    await this.finished;
  }

  private async run(): Promise<void> {
    try {
      this.publish();
      this.armDeadline();
      if (!(await this.setUpVolumes())) return;
      if (!(await this.startSandbox())) return;
      for (const rec of this.rt.init) if (!(await this.runInit(rec))) return;
      for (const rec of this.rt.main) {
        if ('waiting' in rec.state && rec.state.waiting.reason === 'PodInitializing')
          rec.state = { waiting: { reason: 'ContainerCreating' } };
      }
      this.publish();
      await Promise.all(this.rt.main.map((rec) => this.runMain(rec)));
    } catch (err) {
      if (!this.kubelet.closing && !this.gone) console.error(`kube double: kubelet failed on pod ${this.podRef}`, err);
    } finally {
      await this.finish();
    }
  }

  private async finish(): Promise<void> {
    clearTimeout(this.deadlineTimer);
    if (this.running.size > 0) {
      // Something threw while containers ran: stop them rather than leave them behind.
      await Promise.all(
        [...this.running.values()].map((id) =>
          this.o.docker
            .getContainer(id)
            .kill()
            .catch(() => {}),
        ),
      );
    }
    if (this.sandboxId)
      await this.o.docker
        .getContainer(this.sandboxId)
        .kill()
        .catch(() => {});
    this.rt.sandboxReady = false;
    this.rt.finalized = this.stopping !== undefined;
    this.done = true;
    this.publish();
    if (this.pod.metadata.deletionTimestamp && !this.gone) this.deleteFinally();
  }

  /** After a graceful deletion: the kubelet's own DELETE with grace 0 removes the object. */
  private deleteFinally(): void {
    if (this.gone) return;
    try {
      this.o.registry.delete('pods', this.pod.metadata.namespace, this.pod.metadata.name, {
        gracePeriodSeconds: 0,
        preconditions: { uid: this.uid },
      });
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
  }

  private async cleanUp(): Promise<void> {
    const containers = await this.o.docker.listContainers({
      all: true,
      filters: { label: [`${INSTANCE_LABEL}=${this.o.instance}`, `${POD_UID_LABEL}=${this.uid}`] },
    });
    await Promise.all(containers.map((c) => removeContainer(this.o.docker, c.Id)));
    await removeTree(this.dir).catch(() => {});
  }

  private publish(): void {
    if (this.gone || this.kubelet.closing) return;
    const { namespace, name } = this.pod.metadata;
    this.o.registry.mutate('pods', namespace, name, (pod) => {
      if (pod.metadata.uid !== this.uid) return;
      pod.status = buildPodStatus(pod, this.rt);
    });
  }

  private event(type: 'Normal' | 'Warning', reason: string, message: string, container?: string): void {
    if (this.gone || this.kubelet.closing) return;
    const current = this.o.store.peek('pods', this.pod.metadata.namespace, this.pod.metadata.name) ?? this.pod;
    const fieldPath = container
      ? `spec.${this.rt.init.some((r) => r.name === container) ? 'initContainers' : 'containers'}{${container}}`
      : undefined;
    this.o.events.record(current, type, reason, message, { component: 'kubelet', host: this.o.nodeName }, fieldPath);
  }

  /** Waits `ms`, or less when the pod is stopping (or, if `wakeable`, when something it waits for changes). */
  private pause(ms: number, wakeable = true): Promise<void> {
    const signals = [this.stopSignal.signal, ...(wakeable ? [this.wakeSignal.signal] : [])];
    return sleep(ms, AbortSignal.any(signals));
  }

  private requestStop(reason: StopReason, grace: number): void {
    if (this.stopping && this.stopping.grace <= grace) return;
    const first = !this.stopping;
    this.stopping = { reason: this.stopping?.reason ?? reason, grace };
    this.stopSignal.abort();
    for (const [name, id] of this.running) void this.stopContainer(name, id, grace, first);
  }

  private async stopContainer(name: string, id: string, grace: number, announce: boolean): Promise<void> {
    if (announce) this.event('Normal', 'Killing', `Stopping container ${name}`, name);
    const container = this.o.docker.getContainer(id);
    try {
      // docker stop: SIGTERM, then SIGKILL after the grace period, as the kubelet's StopContainer.
      if (grace > 0) await container.stop({ t: grace });
      else await container.kill();
    } catch (err) {
      if (![304, 404, 409].includes(dockerStatus(err) ?? 0)) console.error(`kube double: stopping ${name} failed`, err);
    }
  }

  private armDeadline(): void {
    const seconds = this.pod.spec.activeDeadlineSeconds as number | undefined;
    if (seconds === undefined || this.done || seconds === this.armedDeadline) return;
    this.armedDeadline = seconds;
    clearTimeout(this.deadlineTimer);
    const due = Date.parse(this.rt.startTime) + seconds * 1000 - Date.now();
    this.deadlineTimer = setTimeout(() => this.deadlineExceeded(), Math.max(0, due));
  }

  private deadlineExceeded(): void {
    if (this.done || this.stopping) return;
    const message = 'Pod was active on the node longer than the specified deadline';
    this.rt.terminal = { reason: 'DeadlineExceeded', message };
    this.publish();
    this.event('Warning', 'DeadlineExceeded', message);
    this.requestStop('deadline', this.pod.spec.terminationGracePeriodSeconds ?? 30);
  }

  /** The eviction manager's local-storage check: an emptyDir over its sizeLimit evicts the pod at once. */
  async housekeep(): Promise<void> {
    if (this.done || this.stopping || this.measuring || !this.rt.sandboxReady || !this.volumes.hasSizeLimits) return;
    this.measuring = true;
    let over;
    try {
      over = await this.volumes.overLimit();
    } finally {
      this.measuring = false;
    }
    if (!over || this.done || this.stopping) return;
    const message = `Usage of EmptyDir volume "${over.name}" exceeds the limit "${over.limitText}".`;
    this.rt.terminal = { reason: 'Evicted', message };
    this.rt.disruption = { reason: 'TerminationByKubelet', message };
    this.publish();
    this.event('Warning', 'Evicted', message);
    this.requestStop('evicted', 0);
  }

  private async setUpVolumes(): Promise<boolean> {
    await mkdir(path.join(this.dir, 'containers'), { recursive: true });
    for (;;) {
      if (this.stopping) return false;
      const result = await this.volumes.setUp(this.pod);
      if (result.ok) {
        this.mounts = result.mounts;
        return true;
      }
      // Like a pod stuck in ContainerCreating with FailedMount events, until the Secret shows up.
      this.event('Warning', 'FailedMount', result.message);
      await this.pause(1000);
    }
  }

  private async startSandbox(): Promise<boolean> {
    let backoff = this.o.backoffBaseMs;
    for (;;) {
      if (this.stopping) return false;
      try {
        const hostname = String(this.pod.spec.hostname ?? this.pod.metadata.name)
          .slice(0, 63)
          .replace(/[-.]+$/, '');
        const sandbox = await this.o.docker.createContainer({
          name: `k8s_POD_${this.pod.metadata.name}_${this.pod.metadata.namespace}_${this.uid}_0`,
          Image: this.o.sandboxImage,
          Cmd: ['sleep', '2147483647'],
          Hostname: hostname,
          Labels: { ...this.labels(), 'io.kubernetes.docker.type': 'podsandbox' },
          HostConfig: {
            NetworkMode: this.o.network,
            IpcMode: 'shareable',
            LogConfig: { Type: 'json-file', Config: {} },
          },
        });
        this.sandboxId = sandbox.id;
        await sandbox.start();
        const info = await sandbox.inspect();
        this.rt.podIP = info.NetworkSettings.Networks[this.o.network]?.IPAddress || undefined;
        this.rt.sandboxReady = true;
        this.publish();
        return true;
      } catch (err) {
        this.event('Warning', 'FailedCreatePodSandBox', `Failed to create pod sandbox: ${errorText(err)}`);
        if (this.sandboxId) await removeContainer(this.o.docker, this.sandboxId).catch(() => {});
        this.sandboxId = undefined;
        await this.pause(backoff, false);
        backoff = Math.min(backoff * 2, MAX_RESTART_BACKOFF_MS);
      }
    }
  }

  private labels(container?: string): Record<string, string> {
    return {
      ...this.o.labels,
      [POD_UID_LABEL]: this.uid,
      [POD_NAME_LABEL]: this.pod.metadata.name,
      [POD_NAMESPACE_LABEL]: this.pod.metadata.namespace,
      ...(container ? { [CONTAINER_NAME_LABEL]: container } : {}),
    };
  }

  private get restartPolicy(): string {
    return this.pod.spec.restartPolicy ?? 'Always';
  }

  /** Runs an init container to completion; true when it succeeded (after restarts, unless restartPolicy Never). */
  private async runInit(rec: ContainerRecord): Promise<boolean> {
    for (;;) {
      if (this.stopping) return false;
      const started = await this.startContainer(rec);
      if (started === 'stopped') return false;
      if (started === 'started') await this.waitContainer(rec);
      const t = 'terminated' in rec.state ? rec.state.terminated : undefined;
      if (t?.exitCode === 0) return true;
      if (this.stopping || this.restartPolicy === 'Never') return false;
      await this.backOffRestart(rec);
    }
  }

  private async runMain(rec: ContainerRecord): Promise<void> {
    for (;;) {
      if (this.stopping) return;
      const started = await this.startContainer(rec);
      if (started === 'stopped') return;
      if (started === 'started') await this.waitContainer(rec);
      const t = 'terminated' in rec.state ? rec.state.terminated : undefined;
      if (this.stopping || this.restartPolicy === 'Never' || (this.restartPolicy === 'OnFailure' && t?.exitCode === 0))
        return;
      await this.backOffRestart(rec);
    }
  }

  /** Restarts come at once the first time, then after 10s, 20s, 40s … (CrashLoopBackOff), capped at 5 min. */
  private async backOffRestart(rec: ContainerRecord): Promise<void> {
    const delay =
      rec.restartCount === 0 ? 0 : Math.min(this.o.backoffBaseMs * 2 ** (rec.restartCount - 1), MAX_RESTART_BACKOFF_MS);
    rec.lastState = rec.state;
    rec.restartCount++;
    if (delay > 0) {
      rec.state = {
        waiting: {
          reason: 'CrashLoopBackOff',
          message: `back-off ${formatDelay(delay)} restarting failed container=${rec.name} pod=${this.podRef}`,
        },
      };
      this.publish();
      this.event(
        'Warning',
        'BackOff',
        `Back-off restarting failed container ${rec.name} in pod ${this.podRef}`,
        rec.name,
      );
      await this.pause(delay, false);
    }
  }

  private spec(rec: ContainerRecord): KubeObject {
    const list = (rec.init ? this.pod.spec.initContainers : this.pod.spec.containers) as KubeObject[];
    return list.find((c) => c.name === rec.name)!;
  }

  /** Pulls if need be, configures, creates and starts one incarnation of a container. */
  private async startContainer(rec: ContainerRecord): Promise<'started' | 'startError' | 'stopped'> {
    const spec = this.spec(rec);
    let imageUser = '';
    let pullBackoff = this.o.backoffBaseMs;
    for (;;) {
      if (this.stopping) return 'stopped';
      const image = await this.ensureImage(rec, spec, pullBackoff);
      if (image) {
        imageUser = image.user;
        break;
      }
      pullBackoff = Math.min(pullBackoff * 2, MAX_PULL_BACKOFF_MS);
    }
    const logDir = path.join(this.dir, 'containers', `${rec.name}-${rec.restartCount}`);
    const terminationLogFile = path.join(logDir, 'termination-log');
    let options;
    for (;;) {
      if (this.stopping) return 'stopped';
      try {
        options = containerCreateOptions({
          pod: this.pod,
          container: spec,
          dockerName: `k8s_${rec.name}_${this.pod.metadata.name}_${this.pod.metadata.namespace}_${this.uid}_${rec.restartCount}`,
          sandboxId: this.sandboxId!,
          env: resolveEnv(this.pod, spec, this.o.store),
          mounts: this.mounts,
          terminationLogFile,
          labels: this.labels(rec.name),
          imageUser,
        });
        break;
      } catch (err) {
        if (!(err instanceof ContainerConfigError)) throw err;
        rec.state = { waiting: { reason: 'CreateContainerConfigError', message: err.message } };
        this.publish();
        this.event('Warning', 'Failed', `Error: ${err.message}`, rec.name);
        await this.pause(1000);
      }
    }
    await mkdir(logDir, { recursive: true });
    await writeFile(terminationLogFile, '');
    await chmod(terminationLogFile, 0o666);
    // subPath directories are made on demand, writable like the volume they are in.
    for (const m of (spec.volumeMounts ?? []) as KubeObject[]) {
      const source = this.mounts.get(m.name);
      if (m.subPath && source) {
        const dir = path.join(source.kind === 'bind' ? source.source : source.hostPath!, m.subPath);
        await mkdir(dir, { recursive: true, mode: 0o777 }).catch(() => {});
      }
    }

    const container = await this.o.docker.createContainer(options);
    rec.dockerId = container.id;
    this.event('Normal', 'Created', `Created container ${rec.name}`, rec.name);
    if (this.stopping) return 'stopped';
    try {
      await container.start();
    } catch (err) {
      const message = errorText(err);
      rec.state = {
        terminated: {
          exitCode: 128,
          reason: 'StartError',
          message,
          startedAt: '1970-01-01T00:00:00Z',
          finishedAt: timestamp(),
          containerID: `docker://${container.id}`,
        },
      };
      this.publish();
      this.event('Warning', 'Failed', `Error: ${message}`, rec.name);
      return 'startError';
    }
    this.running.set(rec.name, container.id);
    const info = await container.inspect();
    rec.state = { running: { startedAt: timestamp(new Date(info.State.StartedAt)) } };
    this.publish();
    this.event('Normal', 'Started', `Started container ${rec.name}`, rec.name);
    const stopping = this.stopping as { grace: number } | undefined;
    if (stopping) void this.stopContainer(rec.name, container.id, stopping.grace, true);
    return 'started';
  }

  /** The image, present locally or pulled; undefined after a failed pull (ErrImagePull, then ImagePullBackOff). */
  private async ensureImage(
    rec: ContainerRecord,
    spec: KubeObject,
    backoffMs: number,
  ): Promise<{ user: string } | undefined> {
    const docker = this.o.docker;
    const image = String(spec.image);
    const inspect = async () => {
      const info = await docker.getImage(image).inspect();
      const digest = (info.RepoDigests ?? [])[0];
      rec.imageID = digest ? `docker-pullable://${digest}` : `docker://${info.Id}`;
      return { user: info.Config?.User ?? '' };
    };
    try {
      const present = await inspect();
      this.event('Normal', 'Pulled', `Container image "${image}" already present on machine`, rec.name);
      return present;
    } catch (err) {
      if (dockerStatus(err) !== 404) throw err;
    }
    if (spec.imagePullPolicy === 'Never') {
      const message = `Container image "${image}" is not present with pull policy of Never`;
      rec.state = { waiting: { reason: 'ErrImageNeverPull', message } };
      this.publish();
      this.event('Warning', 'ErrImageNeverPull', message, rec.name);
      await this.pause(backoffMs);
      return undefined;
    }
    this.event('Normal', 'Pulling', `Pulling image "${image}"`, rec.name);
    const started = Date.now();
    try {
      await pullImage(docker, image, this.pullCredentials(image));
      this.event('Normal', 'Pulled', `Successfully pulled image "${image}" in ${Date.now() - started}ms`, rec.name);
      return await inspect();
    } catch (err) {
      const detail = errorText(err);
      rec.state = { waiting: { reason: 'ErrImagePull', message: detail } };
      this.publish();
      this.event('Warning', 'Failed', `Failed to pull image "${image}": ${detail}`, rec.name);
      this.event('Warning', 'Failed', 'Error: ErrImagePull', rec.name);
      await this.pause(Math.min(1000, backoffMs), false);
      if (this.stopping) return undefined;
      rec.state = {
        waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${image}": ErrImagePull: ${detail}` },
      };
      this.publish();
      this.event('Normal', 'BackOff', `Back-off pulling image "${image}"`, rec.name);
      this.event('Warning', 'Failed', 'Error: ImagePullBackOff', rec.name);
      await this.pause(backoffMs, false);
      return undefined;
    }
  }

  /**
   * Credentials for the image's registry from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson or
   * dockercfg); a missing Secret is skipped, as the kubelet pulls anonymously then.
   */
  private pullCredentials(image: string): Record<string, string> | undefined {
    const registry = registryHost(image);
    for (const ref of (this.pod.spec.imagePullSecrets ?? []) as KubeObject[]) {
      const secret = this.o.store.peek('secrets', this.pod.metadata.namespace, ref.name);
      const raw = secret?.data?.['.dockerconfigjson'] ?? secret?.data?.['.dockercfg'];
      if (!raw) continue;
      let config: KubeObject;
      try {
        config = JSON.parse(Buffer.from(raw, 'base64').toString('utf8'));
      } catch {
        continue;
      }
      const auths = (config.auths ?? config) as Record<string, KubeObject>;
      for (const [server, entry] of Object.entries(auths)) {
        const host = server.replace(/^https?:\/\//, '').split('/')[0];
        if (host !== registry && !(registry === 'docker.io' && /(^|\.)docker\.io$/.test(host))) continue;
        let { username, password } = entry as { username?: string; password?: string };
        if ((!username || !password) && typeof entry.auth === 'string') {
          const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
          const colon = decoded.indexOf(':');
          username = decoded.slice(0, colon);
          password = decoded.slice(colon + 1);
        }
        if (username !== undefined && password !== undefined) return { username, password, serveraddress: host };
      }
    }
    return undefined;
  }

  /** Waits for the container to exit and records how: exit code, OOMKilled, times, termination message. */
  private async waitContainer(rec: ContainerRecord): Promise<void> {
    const id = rec.dockerId!;
    const container = this.o.docker.getContainer(id);
    await container.wait().catch(() => {});
    let state: { ExitCode: number; OOMKilled: boolean; StartedAt: string; FinishedAt: string };
    try {
      const info = await container.inspect();
      state = info.State;
      // Docker learns of an OOM kill from containerd's event, which a loaded machine can deliver after the exit: a
      // memory-limited container killed (137) is looked at again for a moment, as the kubelet gets the runtime's
      // reason rather than the bare exit.
      for (let i = 0; i < 10 && state.ExitCode === 137 && !state.OOMKilled && info.HostConfig?.Memory; i++) {
        await new Promise((r) => setTimeout(r, 100));
        state = (await container.inspect()).State;
      }
    } catch {
      // Removed from under us (the double is closing): report it killed.
      state = {
        ExitCode: 137,
        OOMKilled: false,
        StartedAt: new Date().toISOString(),
        FinishedAt: new Date().toISOString(),
      };
    }
    this.running.delete(rec.name);
    const message = await this.terminationMessage(rec, state.ExitCode);
    rec.state = {
      terminated: {
        exitCode: state.ExitCode,
        reason: state.OOMKilled ? 'OOMKilled' : state.ExitCode === 0 ? 'Completed' : 'Error',
        ...(message ? { message } : {}),
        startedAt: timestamp(new Date(state.StartedAt)),
        finishedAt: timestamp(new Date(state.FinishedAt)),
        containerID: `docker://${id}`,
      },
    };
    this.publish();
  }

  /** The termination-log file's content; with FallbackToLogsOnError, the log's tail when the file is empty. */
  private async terminationMessage(rec: ContainerRecord, exitCode: number): Promise<string> {
    const file = path.join(this.dir, 'containers', `${rec.name}-${rec.restartCount}`, 'termination-log');
    const text = await readFile(file)
      .then((b) => b.subarray(0, MAX_TERMINATION_MESSAGE).toString('utf8'))
      .catch(() => '');
    if (text || exitCode === 0 || this.spec(rec).terminationMessagePolicy !== 'FallbackToLogsOnError') return text;
    const raw = await this.o.docker
      .getContainer(rec.dockerId!)
      .logs({ stdout: true, stderr: true, tail: 80, follow: false })
      .catch(() => Buffer.alloc(0));
    const tail = demuxAll(raw).toString('utf8');
    return tail.slice(-2048);
  }
}

async function pullImage(docker: Docker, image: string, authconfig?: Record<string, string>): Promise<void> {
  const stream = await docker.pull(image, authconfig ? { authconfig } : {});
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve()));
  });
}

/** The registry an image reference names: its first part when that looks like a host, else Docker Hub. */
function registryHost(image: string): string {
  const first = image.split('/')[0];
  return image.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')
    ? first
    : 'docker.io';
}

function formatDelay(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s}s`;
}

/** The payloads of Docker's multiplexed log format (8-byte frame headers), concatenated in order. */
export function demuxAll(raw: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= raw.length) {
    const size = raw.readUInt32BE(at + 4);
    parts.push(raw.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return Buffer.concat(parts);
}
