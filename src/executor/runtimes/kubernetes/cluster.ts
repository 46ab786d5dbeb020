// The runtime's one door to the Kubernetes API: the client (@kubernetes/client-node) configured from a kubeconfig
// or the pod's service account, the calls the runtime makes (the Role in deploy/kubernetes grants exactly these),
// API errors turned into one type with the server's own message, and a log stream of our own: the client's Log
// cannot pause a stream for backpressure nor tell a dropped stream from an ended one.
import http from 'node:http';
import https from 'node:https';
import {
  AuthorizationV1Api,
  BatchV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  VersionApi,
  Watch,
  setHeaderOptions,
  type V1Job,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1PodList,
  type V1Secret,
} from '@kubernetes/client-node';
import { RuntimeSetupError } from '../runtime.js';
import type { KubernetesOptions } from './options.js';

/** An answer of the API server that is not a success: its HTTP code, its Status reason and message. */
export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** The client's exceptions (an ApiException whose body is the Status as text) as an ApiError. */
export function apiError(err: unknown, what: string): Error {
  if (err instanceof ApiError) return err;
  const e = err as { code?: unknown; body?: unknown; message?: string };
  if (typeof e.code === 'number' && e.code >= 100) {
    let status: { reason?: string; message?: string } = {};
    try {
      status = typeof e.body === 'string' ? (JSON.parse(e.body) as typeof status) : ((e.body as typeof status) ?? {});
    } catch {
      // Not a Status: the code says enough.
    }
    return new ApiError(e.code, status.reason ?? '', `${what}: ${status.message ?? `HTTP ${e.code}`}`);
  }
  return new Error(`${what}: ${e.message ?? String(err)}`);
}

/** How long an API call (not a watch or a log stream) may go unanswered. */
const API_TIMEOUT_MS = 30_000;

export const isNotFound = (err: unknown): boolean => err instanceof ApiError && err.code === 404;

/** What the client needs: where its configuration is, and the namespace it works in. */
export type ClusterOptions = Pick<KubernetesOptions, 'configPath' | 'context' | 'namespace'>;

/** Where the kubeconfig comes from, for messages. */
function loadConfig(options: ClusterOptions): { kc: KubeConfig; source: string } {
  const kc = new KubeConfig();
  let source: string;
  try {
    if (options.configPath) {
      kc.loadFromFile(options.configPath);
      source = options.configPath;
    } else if (process.env.KUBERNETES_SERVICE_HOST) {
      kc.loadFromCluster();
      source = "the pod's service account (in-cluster)";
    } else {
      kc.loadFromDefault();
      source = process.env.KUBECONFIG || '~/.kube/config';
    }
    if (options.context) kc.setCurrentContext(options.context);
  } catch (err) {
    throw new RuntimeSetupError(
      `cannot read the Kubernetes configuration: ${(err as Error).message}`,
      'set EXECUTOR_KUBERNETES_CONFIG_PATH to a kubeconfig file, or run the executor in a pod with a service account',
    );
  }
  if (options.context && !kc.getContextObject(options.context))
    throw new RuntimeSetupError(
      `the kubeconfig has no context ${JSON.stringify(options.context)}`,
      'set EXECUTOR_KUBERNETES_CONTEXT to one of its contexts (kubectl config get-contexts)',
    );
  if (!kc.getCurrentCluster())
    throw new RuntimeSetupError(
      `the Kubernetes configuration (${source}) names no cluster`,
      'set EXECUTOR_KUBERNETES_CONFIG_PATH to a kubeconfig with a current context',
    );
  return { kc, source };
}

export interface LogStreamHandlers {
  /** A chunk of the container's log; false pauses the stream until `writable()` resolves. */
  data(chunk: Buffer): boolean;
  writable(): Promise<void>;
}

/** How a log request ended: the server ended it, or it failed (dropped), or it was refused with a status. */
export type LogStreamEnd =
  { kind: 'ended' } | { kind: 'dropped'; error: string } | { kind: 'refused'; error: ApiError };

export class Cluster {
  readonly batch: BatchV1Api;
  readonly core: CoreV1Api;
  private readonly authz: AuthorizationV1Api;
  private readonly versions: VersionApi;
  private readonly watcher: Watch;

  private constructor(
    readonly kc: KubeConfig,
    readonly source: string,
    readonly namespace: string,
  ) {
    this.batch = kc.makeApiClient(BatchV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
    this.authz = kc.makeApiClient(AuthorizationV1Api);
    this.versions = kc.makeApiClient(VersionApi);
    this.watcher = new Watch(kc);
  }

  static load(options: ClusterOptions): Cluster {
    const { kc, source } = loadConfig(options);
    return new Cluster(kc, source, options.namespace);
  }

  get server(): string {
    return this.kc.getCurrentCluster()!.server;
  }

  /** One API call, its failure as an ApiError; an API server that does not answer fails it after API_TIMEOUT_MS. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${API_TIMEOUT_MS / 1000}s`)), API_TIMEOUT_MS);
    });
    try {
      return await Promise.race([fn(), timeout]);
    } catch (err) {
      throw apiError(err, what);
    } finally {
      clearTimeout(timer);
    }
  }

  version(): Promise<string> {
    return this.call('reading the server version', async () => (await this.versions.getCode()).gitVersion);
  }

  readNamespace(): Promise<unknown> {
    return this.call(`reading namespace ${this.namespace}`, () => this.core.readNamespace({ name: this.namespace }));
  }

  createJob(body: V1Job): Promise<V1Job> {
    return this.call(`creating Job ${body.metadata?.name}`, () =>
      this.batch.createNamespacedJob({ namespace: this.namespace, body }),
    );
  }

  /** Lets a suspended Job's controller make its pod (false), or has it delete its running pod and keep the Job (true). */
  suspendJob(name: string, suspend: boolean): Promise<V1Job> {
    return this.call(`${suspend ? 'suspending' : 'resuming'} Job ${name}`, () =>
      this.batch.patchNamespacedJob(
        { namespace: this.namespace, name, body: { spec: { suspend } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
    );
  }

  /** Deletes a Job and, through the garbage collector, its pod, Secrets and claim; a Job already gone is fine. */
  async deleteJob(name: string): Promise<void> {
    try {
      await this.call(`deleting Job ${name}`, () =>
        this.batch.deleteNamespacedJob({ namespace: this.namespace, name, propagationPolicy: 'Background' }),
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async listJobs(labelSelector: string): Promise<V1Job[]> {
    return this.call(
      'listing Jobs',
      async () => (await this.batch.listNamespacedJob({ namespace: this.namespace, labelSelector })).items,
    );
  }

  readJob(name: string): Promise<V1Job> {
    return this.call(`reading Job ${name}`, () => this.batch.readNamespacedJob({ namespace: this.namespace, name }));
  }

  createSecret(body: V1Secret): Promise<V1Secret> {
    return this.call(`creating Secret ${body.metadata?.name}`, () =>
      this.core.createNamespacedSecret({ namespace: this.namespace, body }),
    );
  }

  createClaim(body: V1PersistentVolumeClaim): Promise<V1PersistentVolumeClaim> {
    return this.call(`creating PersistentVolumeClaim ${body.metadata?.name}`, () =>
      this.core.createNamespacedPersistentVolumeClaim({ namespace: this.namespace, body }),
    );
  }

  listPods(labelSelector: string): Promise<V1PodList> {
    return this.call('listing pods', () => this.core.listNamespacedPod({ namespace: this.namespace, labelSelector }));
  }

  /** Watches this namespace's pods from `resourceVersion`; `done` gets null when the server ended it, else the error. */
  watchPods(
    params: { labelSelector: string; resourceVersion?: string },
    event: (type: string, object: V1Pod & { code?: number; reason?: string; message?: string }) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    return this.watcher.watch(
      `/api/v1/namespaces/${this.namespace}/pods`,
      { ...params, allowWatchBookmarks: true },
      event,
      done,
    );
  }

  /** Whether this identity may `verb` the resource in the namespace (a SelfSubjectAccessReview). */
  async allowed(verb: string, group: string, resource: string, subresource?: string): Promise<boolean> {
    const review = await this.call(`asking whether ${verb} ${resource} is allowed`, () =>
      this.authz.createSelfSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SelfSubjectAccessReview',
          spec: { resourceAttributes: { namespace: this.namespace, verb, group, resource, subresource } },
        },
      }),
    );
    return review.status?.allowed === true;
  }

  /**
   * Streams one container's log (stdout and stderr as one stream: the API gives nothing else) until the server
   * ends it, it drops or `signal` aborts; pauses the stream while the reader cannot take more.
   */
  async streamLog(
    pod: string,
    container: string,
    query: { sinceTime?: string },
    handlers: LogStreamHandlers,
    signal: AbortSignal,
  ): Promise<LogStreamEnd> {
    const url = new URL(`${this.server}/api/v1/namespaces/${this.namespace}/pods/${pod}/log`);
    url.searchParams.set('container', container);
    url.searchParams.set('follow', 'true');
    url.searchParams.set('timestamps', 'true');
    if (query.sinceTime) url.searchParams.set('sinceTime', query.sinceTime);
    const options: https.RequestOptions = { method: 'GET', headers: { Accept: 'text/plain, */*' } };
    await this.kc.applyToHTTPSOptions(options);
    const request = url.protocol === 'https:' ? https.request : http.request;
    return new Promise<LogStreamEnd>((resolve) => {
      let settled = false;
      const settle = (end: LogStreamEnd) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        resolve(end);
      };
      const req = request(url, { ...options, signal: undefined }, (res) => {
        if (res.statusCode !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', () => undefined);
          res.on('end', () => {
            let status: { reason?: string; message?: string } = {};
            try {
              status = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof status;
            } catch {
              // 204 (no node yet) and friends carry no Status.
            }
            const code = res.statusCode ?? 0;
            settle({
              kind: 'refused',
              error: new ApiError(code, status.reason ?? '', status.message ?? `HTTP ${code}`),
            });
          });
          return;
        }
        let paused = false;
        res.on('data', (chunk: Buffer) => {
          if (handlers.data(chunk) || paused) return;
          paused = true;
          res.pause();
          void handlers.writable().then(() => {
            paused = false;
            res.resume();
          });
        });
        res.on('aborted', () => settle({ kind: 'dropped', error: 'the connection was cut' }));
        res.on('error', (err) => settle({ kind: 'dropped', error: err.message }));
        res.on('end', () => settle(res.complete ? { kind: 'ended' } : { kind: 'dropped', error: 'cut short' }));
      });
      const onAbort = () => {
        req.destroy();
        settle({ kind: 'dropped', error: 'stopped' });
      };
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => settle({ kind: 'dropped', error: err.message }));
      // A connection that went silent (a peer gone without a word) is found by keepalive probes, as for watches.
      req.on('socket', (socket) => socket.setKeepAlive(true, 30_000));
      req.end();
    });
  }
}
