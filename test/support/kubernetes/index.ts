// A Kubernetes API server test double that runs its pods in Docker: startKubeDouble() is the entry point.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Docker from 'dockerode';
import { DOCKER_TEST_IMAGE } from '../docker.js';
import { ApiServer, type RecordedRequest } from './apiServer.js';
import type { Cluster } from './discovery.js';
import {
  createNetwork,
  INSTANCE_LABEL,
  instanceLabels,
  POD_UID_LABEL,
  removeLabelled,
  sweepAbandoned,
  TEMP_DIR_PREFIX,
} from './dockerResources.js';
import { EventRecorder } from './events.js';
import { GarbageCollector } from './garbageCollector.js';
import { JobController } from './jobController.js';
import { Kubelet } from './kubelet.js';
import { ObjectStore } from './objectStore.js';
import { PodLogs } from './podLogs.js';
import { PvcProtectionController } from './pvcProtection.js';
import type { PolicyRule, Subject } from './rbac.js';
import { Registry } from './registry.js';
import { Scheduler } from './scheduler.js';
import { selfSignedCertificate } from './tls.js';
import { newUid, timestamp } from './util.js';
import { removeTree } from './volumes.js';

export interface KubeDoubleOptions {
  /** Existing namespaces; default ['dockhand']. */
  namespaces?: string[];
  /** Default 'double-node'. */
  nodeName?: string;
  /** Default {'kubernetes.io/hostname': nodeName, 'kubernetes.io/os': 'linux'}. */
  nodeLabels?: Record<string, string>;
  /** Rules (rbac.authorization.k8s.io/v1 PolicyRule: apiGroups, resources, verbs) the executor token gets; the admin token may do anything. Default: everything allowed. */
  executorRules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  /** How often the kubelet checks emptyDir usage against sizeLimit; default 1000. */
  housekeepingIntervalMs?: number;
  /** How many change events watches can replay (the watch cache's window); default 1000. Older RVs get 410 Expired. */
  watchHistorySize?: number;
  /** Base of the back-offs (Job pod retries, container restarts, image pulls), doubled each time; default 10000 as in Kubernetes. */
  backoffBaseMs?: number;
}

export interface KubeDouble {
  /** http://127.0.0.1:PORT (plain HTTP). */
  url: string;
  /**
   * https://127.0.0.1:PORT: the same server over TLS (same port). Kubeconfigs point here, because client-go
   * (kubectl) sends a bearer token only over TLS.
   */
  httpsUrl: string;
  /** The server's self-signed certificate (PEM), which is also the CA to trust for httpsUrl. */
  caCertificate: string;
  adminToken: string;
  executorToken: string;
  /**
   * Writes a kubeconfig file (cluster server=httpsUrl with caCertificate as its CA, user with the token, context
   * namespace) and returns its path.
   */
  writeKubeconfig(dir: string, user: 'admin' | 'executor', namespace?: string): Promise<string>;
  /** The docker network pods are attached to, and this host's address on it (the bridge gateway), where pods reach servers the test runs on 0.0.0.0. */
  network: string;
  hostAddress: string;
  faults: {
    /** Ends every open watch stream abruptly (socket destroyed). */
    dropWatches(): void;
    /** The next n watch requests that give a resourceVersion get 200 + one ERROR event {code 410, reason Expired} and then end. */
    expireNextWatches(n?: number): void;
    /** Ends every open pods/log follow stream abruptly. */
    dropLogStreams(): void;
  };
  /** Test introspection: the stored objects of a kind in a namespace (raw JSON), and every request seen (method, path, query, user). */
  objects(resource: 'jobs' | 'pods' | 'secrets' | 'persistentvolumeclaims', namespace?: string): any[];
  requests: { method: string; path: string; query: Record<string, string>; user: 'admin' | 'executor' }[];
  /** Docker containers the double has for pods (by label), so tests can assert nothing is left. */
  containers(): Promise<string[]>;
  /** Removes every container, volume, network and temp dir it made. */
  close(): Promise<void>;
}

export async function startKubeDouble(opts: KubeDoubleOptions = {}): Promise<KubeDouble> {
  const namespaces = opts.namespaces ?? ['dockhand'];
  const nodeName = opts.nodeName ?? 'double-node';
  const nodeLabels = opts.nodeLabels ?? { 'kubernetes.io/hostname': nodeName, 'kubernetes.io/os': 'linux' };
  const instance = `${process.pid}-${randomBytes(3).toString('hex')}`;
  const labels = instanceLabels(instance);
  const docker = new Docker();

  await sweepAbandoned(docker).catch(() => {});
  const tmpRoot = await mkdtemp(path.join(os.tmpdir(), `${TEMP_DIR_PREFIX}${process.pid}-`));
  const network = `kube-double-${instance}`;
  let hostAddress: string;
  try {
    hostAddress = await createNetwork(docker, network, labels);
  } catch (err) {
    await removeTree(tmpRoot);
    throw err;
  }

  const created = timestamp();
  const cluster: Cluster = {
    namespaces: namespaces.map((name) => ({ name, uid: newUid(), creationTimestamp: created })),
    node: { name: nodeName, uid: newUid(), labels: nodeLabels, address: hostAddress, creationTimestamp: created },
  };
  const store = new ObjectStore(opts.watchHistorySize ?? 1000);
  const registry = new Registry(store, new Set(namespaces));
  const events = new EventRecorder(store);
  const backoffBaseMs = opts.backoffBaseMs ?? 10_000;
  const kubelet = new Kubelet({
    docker,
    registry,
    store,
    events,
    nodeName,
    hostAddress,
    network,
    instance,
    labels,
    tmpRoot,
    housekeepingIntervalMs: opts.housekeepingIntervalMs ?? 1000,
    backoffBaseMs,
    sandboxImage: DOCKER_TEST_IMAGE,
  });
  const controllers = [
    new Scheduler(registry, store, events, { name: nodeName, labels: nodeLabels }),
    new JobController(registry, store, events, backoffBaseMs),
    new GarbageCollector(registry, store),
    new PvcProtectionController(registry, store),
  ];

  const adminToken = randomBytes(24).toString('hex');
  const executorToken = randomBytes(24).toString('hex');
  const tokens = new Map<string, Subject>([
    [adminToken, { kind: 'admin', username: 'kubernetes-admin', groups: ['system:masters', 'system:authenticated'] }],
    [
      executorToken,
      {
        kind: 'executor',
        username: `system:serviceaccount:${namespaces[0]}:executor`,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${namespaces[0]}`, 'system:authenticated'],
        rules: (opts.executorRules as PolicyRule[] | undefined) ?? [
          { apiGroups: ['*'], resources: ['*'], verbs: ['*'] },
        ],
      },
    ],
  ]);
  const certificate = selfSignedCertificate();
  const api = new ApiServer({
    store,
    registry,
    cluster,
    tokens,
    logs: new PodLogs(registry, docker, nodeName),
    certificate,
  });
  kubelet.start();
  for (const c of controllers) c.start();
  const address = await api.listen();
  const url = `http://${address}`;
  const httpsUrl = `https://${address}`;

  let closed: Promise<void> | undefined;
  return {
    url,
    httpsUrl,
    caCertificate: certificate.cert,
    adminToken,
    executorToken,
    network,
    hostAddress,
    requests: api.requests as RecordedRequest[],
    faults: {
      dropWatches: () => api.dropWatches(),
      expireNextWatches: (n = 1) => api.expireNextWatches(n),
      dropLogStreams: () => api.dropLogStreams(),
    },
    objects: (resource, namespace) => store.list(resource, namespace),
    async writeKubeconfig(dir, user, namespace = namespaces[0]) {
      const file = path.join(dir, `kubeconfig-${user}-${namespace}-${instance}.json`);
      const config = {
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'kube-double',
            cluster: {
              server: httpsUrl,
              'certificate-authority-data': Buffer.from(certificate.cert).toString('base64'),
            },
          },
        ],
        users: [{ name: user, user: { token: user === 'admin' ? adminToken : executorToken } }],
        contexts: [{ name: `${user}@kube-double`, context: { cluster: 'kube-double', user, namespace } }],
        'current-context': `${user}@kube-double`,
        preferences: {},
      };
      await writeFile(file, JSON.stringify(config, null, 2));
      await chmod(file, 0o600);
      return file;
    },
    async containers() {
      const list = await docker.listContainers({
        all: true,
        filters: { label: [`${INSTANCE_LABEL}=${instance}`, POD_UID_LABEL] },
      });
      return list.map((c) => c.Id);
    },
    close() {
      closed ??= (async () => {
        await api.close();
        for (const c of controllers) c.stop();
        await kubelet.close();
        await removeLabelled(docker, `${INSTANCE_LABEL}=${instance}`);
        await removeTree(tmpRoot);
      })();
      return closed;
    },
  };
}
