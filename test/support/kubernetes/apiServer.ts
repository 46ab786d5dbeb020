// The HTTP face of the double: authentication, RBAC, discovery, the REST verbs on the served resources with
// Status errors, list/watch with resourceVersions, pods/log, and SelfSubjectAccessReview.
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo, type Socket } from 'node:net';
import YAML from 'yaml';
import {
  apiGroupDoc,
  apiGroupList,
  apiVersions,
  namespaceObject,
  nodeObject,
  openApiV3Document,
  openApiV3Root,
  resourceList,
  SERVER_VERSION,
  type Cluster,
} from './discovery.js';
import type { ObjectStore, Resource, StoreEvent } from './objectStore.js';
import { decodeProtobuf } from './protobuf.js';
import {
  forbiddenError,
  isAllowed,
  requestInfo,
  reviewAccess,
  rulesFor,
  type RequestInfo,
  type Subject,
} from './rbac.js';
import { RESOURCE_DEFS, type DeleteOptions, type Registry } from './registry.js';
import {
  ApiError,
  badRequest,
  expired,
  internalError,
  methodNotSupported,
  notFound,
  pathNotFound,
  timeoutError,
  unauthorized,
  type StatusBody,
} from './status.js';
import { emptyTable, toTable, wantsTable } from './table.js';
import type { ServerCertificate } from './tls.js';
import type { KubeObject } from './util.js';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  user: 'admin' | 'executor';
}

/** Serves GET …/pods/{name}/log; `track` registers a follow stream so faults can cut it. */
export interface PodLogSource {
  serve(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    namespace: string,
    name: string,
    query: URLSearchParams,
    track: (res: http.ServerResponse) => void,
  ): Promise<void>;
}

export interface ApiServerOptions {
  store: ObjectStore;
  registry: Registry;
  cluster: Cluster;
  tokens: Map<string, Subject>;
  logs: PodLogSource;
  certificate: ServerCertificate;
}

const SERVED: Record<string, Partial<Record<string, Resource>>> = {
  '': { pods: 'pods', secrets: 'secrets', persistentvolumeclaims: 'persistentvolumeclaims', events: 'events' },
  batch: { jobs: 'jobs' },
};

export class ApiServer {
  readonly requests: RecordedRequest[] = [];
  private readonly listener: net.Server;
  private readonly http: http.Server;
  private readonly https: https.Server;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<http.ServerResponse>();
  private readonly logStreams = new Set<http.ServerResponse>();
  private expireBudget = 0;
  private address = '';

  constructor(private readonly o: ApiServerOptions) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    };
    this.http = http.createServer(handler);
    this.https = https.createServer({ key: o.certificate.key, cert: o.certificate.cert }, handler);
    // One port, both protocols: a connection that opens with a TLS handshake record (0x16) goes to the HTTPS server.
    this.listener = net.createServer((socket) => {
      socket.setNoDelay(true);
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {});
      socket.once('data', (first: Buffer) => {
        socket.pause();
        socket.unshift(first);
        (first[0] === 0x16 ? this.https : this.http).emit('connection', socket);
        process.nextTick(() => socket.resume());
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.listener.once('error', reject);
      this.listener.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.listener.address() as AddressInfo;
    this.address = `127.0.0.1:${port}`;
    return this.address;
  }

  dropWatches(): void {
    for (const res of this.watches) res.socket?.destroy();
  }

  expireNextWatches(n = 1): void {
    this.expireBudget += n;
  }

  dropLogStreams(): void {
    for (const res of this.logStreams) res.socket?.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.listener.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://double');
    const path = url.pathname;
    const query = url.searchParams;
    const method = req.method ?? 'GET';
    const subject = this.authenticate(req);
    this.requests.push({ method, path, query: Object.fromEntries(query), user: subject.kind });

    const info = requestInfo(method, path, query);
    if (!info.isResourceRequest) {
      const attributes = {
        verb: info.verb,
        apiGroup: '',
        resource: '',
        subresource: '',
        name: '',
        namespace: '',
        path,
      };
      if (!isAllowed(subject, attributes)) throw forbiddenError(subject, attributes);
      return this.serveNonResource(req, res, path);
    }
    const attrs = {
      verb: info.verb,
      apiGroup: info.apiGroup,
      resource: info.resource,
      subresource: info.subresource,
      name: info.name,
      namespace: info.namespace,
    };
    if (!isAllowed(subject, attrs)) throw forbiddenError(subject, attrs);
    await this.serveResource(req, res, info, query, subject);
  }

  private authenticate(req: http.IncomingMessage): Subject {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header);
    const subject = m ? this.o.tokens.get(m[1].trim()) : undefined;
    if (!subject) throw unauthorized();
    return subject;
  }

  private serveNonResource(req: http.IncomingMessage, res: http.ServerResponse, path: string): void {
    const p = path.replace(/\/+$/, '') || '/';
    if (req.method !== 'GET') throw methodNotSupported('', '', req.method ?? '');
    if (p === '/version') return this.json(res, 200, SERVER_VERSION);
    if (p === '/healthz' || p === '/livez' || p === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    // Legacy discovery only; kubectl accepts it when the answer is not the aggregated kind it asked for first.
    if (p === '/api') return this.json(res, 200, apiVersions(this.address));
    if (p === '/apis') return this.json(res, 200, apiGroupList());
    const group = /^\/apis\/([^/]+)$/.exec(p);
    if (group) {
      const doc = apiGroupDoc(group[1]);
      if (doc) return this.json(res, 200, doc);
    }
    const gv = /^\/api\/(v1)$/.exec(p) ?? /^\/apis\/([^/]+\/v1)$/.exec(p);
    if (gv) {
      const doc = resourceList(gv[1]);
      if (doc) return this.json(res, 200, doc);
    }
    if (p === '/openapi/v3') return this.json(res, 200, openApiV3Root());
    const openapi = /^\/openapi\/v3\/(.+)$/.exec(p);
    if (openapi) {
      const doc = openApiV3Document(openapi[1]);
      if (doc) return this.json(res, 200, doc);
    }
    // No /openapi/v2: kubectl reads v3 when the server has it.
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('404 page not found\n');
  }

  private async serveResource(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    info: RequestInfo,
    query: URLSearchParams,
    subject: Subject,
  ): Promise<void> {
    const { apiGroup: group, apiVersion: version, resource, subresource, name, namespace, verb } = info;
    if (version !== 'v1') throw pathNotFound();

    if (group === 'authorization.k8s.io') return this.serveAccessReview(req, res, resource, verb, subject);
    if (group === '' && resource === 'namespaces') return this.serveNamespaces(req, res, info);
    if (group === '' && resource === 'nodes') return this.serveNodes(req, res, info);

    const stored = SERVED[group]?.[resource];
    if (!stored) throw pathNotFound();
    const def = RESOURCE_DEFS[stored];
    // Objects live in namespaces; only list and watch may span them all.
    if (!namespace && !(verb === 'list' || verb === 'watch')) throw pathNotFound();
    if (info.parts.length > 3) throw pathNotFound();

    if (subresource) {
      if (stored === 'pods' && subresource === 'log' && verb === 'get') {
        await this.o.logs.serve(req, res, namespace, name, query, (stream) => {
          this.logStreams.add(stream);
          stream.on('close', () => this.logStreams.delete(stream));
        });
        return;
      }
      if (subresource === 'status' && verb === 'get')
        return this.object(req, res, this.o.registry.get(stored, namespace, name), query);
      throw subresource === 'status' || subresource === 'log'
        ? methodNotSupported(def.group, resource, verb)
        : pathNotFound();
    }

    switch (verb) {
      case 'get':
        return this.object(req, res, this.o.registry.get(stored, namespace, name), query);
      case 'list': {
        const matches = this.o.registry.matcher(
          stored,
          query.get('labelSelector') ?? undefined,
          query.get('fieldSelector') ?? undefined,
        );
        const list = this.o.registry.list(stored, namespace || undefined, matches);
        if (wantsTable(req.headers.accept)) {
          return this.json(
            res,
            200,
            list.items.length
              ? toTable(list.items, list.resourceVersion, query.get('includeObject'))
              : emptyTable(def.kind, list.resourceVersion),
          );
        }
        return this.json(res, 200, {
          kind: `${def.kind}List`,
          apiVersion: def.apiVersion,
          metadata: { resourceVersion: list.resourceVersion },
          // A real apiserver's list items carry no kind/apiVersion.
          items: list.items.map(({ kind: _k, apiVersion: _a, ...rest }) => rest),
        });
      }
      case 'watch':
        return this.serveWatch(req, res, stored, namespace, name, query);
      case 'create': {
        if (name) throw methodNotSupported(def.group, resource, 'create');
        const body = await readBody(req);
        const created = this.o.registry.create(stored, namespace, body);
        return this.object(req, res, created, query, 201);
      }
      case 'update': {
        const body = await readBody(req);
        return this.object(req, res, this.o.registry.replace(stored, namespace, name, body), query);
      }
      case 'patch': {
        const body = await readBody(req);
        return this.object(
          req,
          res,
          this.o.registry.patch(stored, namespace, name, req.headers['content-type'] ?? '', body),
          query,
        );
      }
      case 'delete': {
        const body = await readBody(req, true);
        const options = deleteOptions(query, body);
        const result = this.o.registry.delete(stored, namespace, name, options);
        if (result.warning) res.setHeader('Warning', `299 - "${result.warning}"`);
        return this.json(res, 200, result.body);
      }
      default:
        throw methodNotSupported(def.group, resource, verb);
    }
  }

  /** One object: as JSON, or as a one-row Table when kubectl prints for humans. */
  private object(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    obj: KubeObject,
    query: URLSearchParams,
    code = 200,
  ): void {
    if (code === 200 && wantsTable(req.headers.accept)) {
      return this.json(res, 200, toTable([obj], obj.metadata.resourceVersion, query.get('includeObject')));
    }
    this.json(res, code, obj);
  }

  /**
   * A watch: 200 with the headers flushed at once, then one JSON event per line. No resourceVersion (or "0") starts
   * with a synthetic ADDED per current match; N replays the history after N, or ends with an ERROR 410 when that
   * history is gone.
   */
  private async serveWatch(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    resource: Resource,
    namespace: string,
    name: string,
    query: URLSearchParams,
  ): Promise<void> {
    const store = this.o.store;
    let fieldSelector = query.get('fieldSelector') ?? undefined;
    if (name) fieldSelector = [fieldSelector, `metadata.name=${name}`].filter(Boolean).join(',');
    const matches = this.o.registry.matcher(resource, query.get('labelSelector') ?? undefined, fieldSelector);
    const inScope = (obj: KubeObject) => (!namespace || obj.metadata.namespace === namespace) && matches(obj);
    const rvParam = query.get('resourceVersion') ?? '';
    const timeoutSeconds = Number(query.get('timeoutSeconds') ?? 0);
    const sendInitialEvents = query.get('sendInitialEvents') === 'true';
    const bookmarks = query.get('allowWatchBookmarks') === 'true';
    const table = wantsTable(req.headers.accept);
    const fromRv = rvParam && rvParam !== '0' ? Number(rvParam) : undefined;
    if (rvParam && !/^\d+$/.test(rvParam)) {
      throw badRequest(
        `resourceVersion: Invalid value: "${rvParam}": strconv.ParseUint: parsing "${rvParam}": invalid syntax`,
      );
    }
    if (fromRv !== undefined && fromRv > store.resourceVersion) {
      // A resourceVersion from the future: the watch cache waits a little for it, then gives up (504).
      const deadline = Date.now() + 3000;
      while (store.resourceVersion < fromRv && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      if (store.resourceVersion < fromRv) {
        throw timeoutError(`Too large resource version: ${fromRv}, current: ${store.resourceVersion}`, 1);
      }
    }

    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    let first = true;
    const send = (type: string, object: unknown) => {
      if (table && type !== 'ERROR' && type !== 'BOOKMARK') {
        object = toTable(
          [object as KubeObject],
          (object as KubeObject).metadata.resourceVersion,
          query.get('includeObject'),
          first,
        );
        first = false;
      }
      res.write(JSON.stringify({ type, object }) + '\n');
    };
    const endWithError = (err: ApiError) => {
      send('ERROR', err.body);
      res.end();
    };

    if (fromRv !== undefined && this.expireBudget > 0) {
      this.expireBudget--;
      return endWithError(expired(`too old resource version: ${fromRv} (${store.resourceVersion})`));
    }
    let replay: StoreEvent[] = [];
    if (fromRv === undefined || sendInitialEvents) {
      for (const obj of store.list(resource, namespace || undefined, true)) if (inScope(obj)) send('ADDED', obj);
      if (sendInitialEvents && bookmarks) {
        send('BOOKMARK', {
          kind: RESOURCE_DEFS[resource].kind,
          apiVersion: RESOURCE_DEFS[resource].apiVersion,
          metadata: {
            resourceVersion: String(store.resourceVersion),
            annotations: { 'k8s.io/initial-events-end': 'true' },
          },
        });
      }
    } else {
      const events = store.eventsSince(fromRv);
      if (!events) return endWithError(expired(`too old resource version: ${fromRv} (${store.oldestWatchable + 1})`));
      replay = events;
    }

    const deliver = (e: StoreEvent) => {
      if (e.resource !== resource) return;
      const now = e.type !== 'DELETED' && inScope(e.object);
      const before = e.previous ? inScope(e.previous) : false;
      // A selector watch sees an object arrive when it starts matching and leave when it stops.
      if (e.type === 'ADDED' && now) send('ADDED', e.object);
      else if (e.type === 'MODIFIED' && now) send(before ? 'MODIFIED' : 'ADDED', e.object);
      else if (e.type === 'MODIFIED' && before) send('DELETED', e.object);
      else if (e.type === 'DELETED' && (before || inScope(e.object))) send('DELETED', e.object);
    };
    for (const e of replay) deliver(e);
    const unsubscribe = store.subscribe(deliver);
    this.watches.add(res);
    const timer = timeoutSeconds > 0 ? setTimeout(() => res.end(), timeoutSeconds * 1000) : undefined;
    res.on('close', () => {
      unsubscribe();
      clearTimeout(timer);
      this.watches.delete(res);
    });
  }

  private async serveAccessReview(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    resource: string,
    verb: string,
    subject: Subject,
  ): Promise<void> {
    if (verb !== 'create' || (resource !== 'selfsubjectaccessreviews' && resource !== 'selfsubjectrulesreviews')) {
      throw resource === 'selfsubjectaccessreviews' || resource === 'selfsubjectrulesreviews'
        ? methodNotSupported('authorization.k8s.io', resource, verb)
        : pathNotFound();
    }
    const body = (await readBody(req)) as KubeObject | undefined;
    const spec = (body?.spec ?? {}) as KubeObject;
    if (resource === 'selfsubjectaccessreviews') {
      if (!spec.resourceAttributes && !spec.nonResourceAttributes) {
        throw badRequest(
          'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must be specified',
        );
      }
      return this.json(res, 201, {
        kind: 'SelfSubjectAccessReview',
        apiVersion: 'authorization.k8s.io/v1',
        metadata: { creationTimestamp: null },
        spec,
        status: reviewAccess(subject, spec),
      });
    }
    return this.json(res, 201, {
      kind: 'SelfSubjectRulesReview',
      apiVersion: 'authorization.k8s.io/v1',
      metadata: { creationTimestamp: null },
      spec,
      status: {
        resourceRules: rulesFor(subject).map((r) => ({
          verbs: r.verbs,
          apiGroups: r.apiGroups,
          resources: r.resources,
        })),
        nonResourceRules: [
          {
            verbs: ['get'],
            nonResourceURLs: [
              '/api',
              '/api/*',
              '/apis',
              '/apis/*',
              '/healthz',
              '/livez',
              '/readyz',
              '/version',
              '/version/',
            ],
          },
        ],
        incomplete: false,
      },
    });
  }

  private serveNamespaces(req: http.IncomingMessage, res: http.ServerResponse, info: RequestInfo): void {
    const all = this.o.cluster.namespaces.map(namespaceObject);
    if (info.verb === 'get' && !info.subresource) {
      const ns = all.find((n) => n.metadata.name === info.name);
      if (!ns) throw notFound('', 'namespaces', info.name);
      return this.object(req, res, ns, new URLSearchParams());
    }
    if (info.verb === 'list') {
      if (wantsTable(req.headers.accept)) return this.json(res, 200, toTable(all, '1', null));
      return this.json(res, 200, {
        kind: 'NamespaceList',
        apiVersion: 'v1',
        metadata: { resourceVersion: '1' },
        items: all,
      });
    }
    throw methodNotSupported('', 'namespaces', info.verb);
  }

  private serveNodes(req: http.IncomingMessage, res: http.ServerResponse, info: RequestInfo): void {
    const node = nodeObject(this.o.cluster.node);
    if (info.verb === 'get' && !info.subresource) {
      if (info.name !== node.metadata.name) throw notFound('', 'nodes', info.name);
      return this.object(req, res, node, new URLSearchParams());
    }
    if (info.verb === 'list') {
      if (wantsTable(req.headers.accept)) return this.json(res, 200, toTable([node], '1', null));
      return this.json(res, 200, {
        kind: 'NodeList',
        apiVersion: 'v1',
        metadata: { resourceVersion: '1' },
        items: [node],
      });
    }
    throw methodNotSupported('', 'nodes', info.verb);
  }

  private json(res: http.ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Content-Length': Buffer.byteLength(text),
    });
    res.end(text);
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    const apiErr = err instanceof ApiError ? err : internalError(err instanceof Error ? err.message : String(err));
    if (!(err instanceof ApiError)) console.error('kube double: request failed', err);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    this.json(res, apiErr.code, apiErr.body satisfies StatusBody);
  }
}

/** The request body as JSON (or YAML, which the apiserver also accepts); empty means undefined when allowed. */
async function readBody(req: http.IncomingMessage, emptyOk = false): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  const text = raw.toString('utf8');
  if (text.trim() === '') {
    if (emptyOk) return undefined;
    throw badRequest('the body of the request was empty');
  }
  const type = (req.headers['content-type'] ?? 'application/json').split(';')[0].trim();
  if (type === 'application/vnd.kubernetes.protobuf') {
    const decoded = decodeProtobuf(raw);
    if (decoded) return decoded;
    throw new ApiError({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message:
        'the body of the request was in an unknown format - accepted media types include: application/json, application/yaml',
      reason: 'UnsupportedMediaType',
      code: 415,
    });
  }
  try {
    return type.includes('yaml') ? YAML.parse(text) : JSON.parse(text);
  } catch (err) {
    throw badRequest(`couldn't get version/kind; json parse error: ${(err as Error).message}`);
  }
}

/** DeleteOptions from the query string or from the body (kubectl sends a body). */
function deleteOptions(query: URLSearchParams, body: unknown): DeleteOptions {
  const b = (body ?? {}) as KubeObject;
  const grace = query.get('gracePeriodSeconds') ?? b.gracePeriodSeconds;
  const orphan = query.get('orphanDependents') ?? b.orphanDependents;
  return {
    propagationPolicy: query.get('propagationPolicy') ?? b.propagationPolicy ?? undefined,
    gracePeriodSeconds: grace === undefined || grace === null ? undefined : Number(grace),
    orphanDependents: orphan === undefined || orphan === null ? undefined : String(orphan) === 'true',
    preconditions: b.preconditions,
  };
}
