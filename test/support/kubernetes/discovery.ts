// Discovery documents in their legacy (non-aggregated) form, which kubectl falls back to when the answer to its
// aggregated-discovery Accept header comes back as plain application/json; and the static cluster objects
// (namespaces, the one node).
import { RESOURCE_DEFS } from './registry.js';

export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4',
  gitCommit: '59526cd4867447956156ae3a602fcbac10a2c335',
  gitTreeState: 'clean',
  buildDate: '2025-04-22T16:02:27Z',
  goVersion: 'go1.23.6',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export function apiVersions(serverAddress: string) {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

const GROUPS = ['batch', 'authorization.k8s.io'];

function apiGroup(name: string) {
  const gv = { groupVersion: `${name}/v1`, version: 'v1' };
  return { name, versions: [gv], preferredVersion: gv };
}

export function apiGroupList() {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: GROUPS.map(apiGroup) };
}

export function apiGroupDoc(name: string) {
  return GROUPS.includes(name) ? { kind: 'APIGroup', apiVersion: 'v1', ...apiGroup(name) } : undefined;
}

function resourceEntry(resource: keyof typeof RESOURCE_DEFS) {
  const d = RESOURCE_DEFS[resource];
  return {
    name: d.resource,
    singularName: d.singular,
    namespaced: true,
    kind: d.kind,
    verbs: d.verbs,
    ...(d.shortNames.length ? { shortNames: d.shortNames } : {}),
    ...(resource === 'pods' || resource === 'jobs' ? { categories: ['all'] } : {}),
  };
}

function subresource(name: string, kind: string, verbs: string[], group?: string) {
  return { name, singularName: '', namespaced: true, ...(group ? { group, version: 'v1' } : {}), kind, verbs };
}

export function resourceList(groupVersion: string) {
  switch (groupVersion) {
    case 'v1':
      return {
        kind: 'APIResourceList',
        groupVersion: 'v1',
        resources: [
          resourceEntry('events'),
          {
            name: 'namespaces',
            singularName: 'namespace',
            namespaced: false,
            kind: 'Namespace',
            verbs: ['get', 'list'],
            shortNames: ['ns'],
          },
          {
            name: 'nodes',
            singularName: 'node',
            namespaced: false,
            kind: 'Node',
            verbs: ['get', 'list'],
            shortNames: ['no'],
          },
          resourceEntry('persistentvolumeclaims'),
          resourceEntry('pods'),
          subresource('pods/log', 'Pod', ['get']),
          subresource('pods/status', 'Pod', ['get']),
          resourceEntry('secrets'),
        ],
      };
    case 'batch/v1':
      return {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'batch/v1',
        resources: [resourceEntry('jobs'), subresource('jobs/status', 'Job', ['get'])],
      };
    case 'authorization.k8s.io/v1':
      return {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'authorization.k8s.io/v1',
        resources: [
          {
            name: 'selfsubjectaccessreviews',
            singularName: 'selfsubjectaccessreview',
            namespaced: false,
            kind: 'SelfSubjectAccessReview',
            verbs: ['create'],
          },
          {
            name: 'selfsubjectrulesreviews',
            singularName: 'selfsubjectrulesreview',
            namespaced: false,
            kind: 'SelfSubjectRulesReview',
            verbs: ['create'],
          },
        ],
      };
    default:
      return undefined;
  }
}

export interface Cluster {
  namespaces: { name: string; uid: string; creationTimestamp: string }[];
  node: { name: string; uid: string; labels: Record<string, string>; address: string; creationTimestamp: string };
}

export function namespaceObject(ns: Cluster['namespaces'][number]) {
  return {
    kind: 'Namespace',
    apiVersion: 'v1',
    metadata: {
      name: ns.name,
      uid: ns.uid,
      resourceVersion: '1',
      creationTimestamp: ns.creationTimestamp,
      labels: { 'kubernetes.io/metadata.name': ns.name },
    },
    spec: { finalizers: ['kubernetes'] },
    status: { phase: 'Active' },
  };
}

export function nodeObject(node: Cluster['node']) {
  return {
    kind: 'Node',
    apiVersion: 'v1',
    metadata: {
      name: node.name,
      uid: node.uid,
      resourceVersion: '1',
      creationTimestamp: node.creationTimestamp,
      labels: node.labels,
    },
    spec: {},
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          lastHeartbeatTime: node.creationTimestamp,
          lastTransitionTime: node.creationTimestamp,
          reason: 'KubeletReady',
          message: 'kubelet is posting ready status',
        },
      ],
      addresses: [
        { type: 'InternalIP', address: node.address },
        { type: 'Hostname', address: node.name },
      ],
      nodeInfo: {
        kubeletVersion: SERVER_VERSION.gitVersion,
        containerRuntimeVersion: 'docker://',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
    },
  };
}

const OPENAPI_GROUP_VERSIONS: Record<
  string,
  { prefix: string; group: string; resources: (keyof typeof RESOURCE_DEFS)[] }
> = {
  'api/v1': { prefix: '/api/v1', group: '', resources: ['pods', 'secrets', 'persistentvolumeclaims', 'events'] },
  'apis/batch/v1': { prefix: '/apis/batch/v1', group: 'batch', resources: ['jobs'] },
};

/** /openapi/v3: where each group-version's document is. */
export function openApiV3Root() {
  return {
    paths: Object.fromEntries(
      Object.keys(OPENAPI_GROUP_VERSIONS).map((gv) => [
        gv,
        { serverRelativeURL: `/openapi/v3/${gv}?hash=${SERVER_VERSION.gitCommit}` },
      ]),
    ),
  };
}

/**
 * A group-version's OpenAPI v3 document, reduced to what kubectl reads: each resource's PATCH operation with its
 * x-kubernetes-group-version-kind and the fieldValidation parameter, from which kubectl learns that the server
 * validates fields itself (so it needs no schemas of its own). No schemas are served.
 */
export function openApiV3Document(gv: string) {
  const entry = OPENAPI_GROUP_VERSIONS[gv];
  if (!entry) return undefined;
  const paths: Record<string, unknown> = {};
  for (const resource of entry.resources) {
    const d = RESOURCE_DEFS[resource];
    const gvk = { group: entry.group, version: 'v1', kind: d.kind };
    const queryParam = (name: string) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } });
    paths[`${entry.prefix}/namespaces/{namespace}/${resource}/{name}`] = {
      get: { 'x-kubernetes-action': 'get', 'x-kubernetes-group-version-kind': gvk, responses: {} },
      patch: {
        'x-kubernetes-action': 'patch',
        'x-kubernetes-group-version-kind': gvk,
        parameters: [
          queryParam('dryRun'),
          queryParam('fieldManager'),
          queryParam('fieldValidation'),
          { name: 'force', in: 'query', schema: { type: 'boolean' } },
        ],
        responses: {},
      },
    };
    paths[`${entry.prefix}/namespaces/{namespace}/${resource}`] = {
      post: {
        'x-kubernetes-action': 'post',
        'x-kubernetes-group-version-kind': gvk,
        parameters: [queryParam('dryRun'), queryParam('fieldManager'), queryParam('fieldValidation')],
        responses: {},
      },
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: SERVER_VERSION.gitVersion },
    paths,
    components: { schemas: {} },
  };
}
