// The offline Kubernetes validator the runtime's tests and the deploy test rely on: it must accept what an API
// server accepts and refuse, with the field's path, each kind of mistake a server refuses on create.
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { KNOWN_KINDS, parseQuantity, validateKubernetesObject } from '../support/kubernetes/validate.js';

type Obj = Record<string, any>;

const labels = { 'app.kubernetes.io/name': 'dockhand', 'dockhand.dev/role': 'job' };

function podSpec(): Obj {
  return {
    restartPolicy: 'Never',
    automountServiceAccountToken: false,
    securityContext: { seccompProfile: { type: 'RuntimeDefault' } },
    initContainers: [
      {
        name: 'setup',
        image: 'alpine/git:v2.49.1',
        command: ['/bin/sh', '-c', 'true'],
        volumeMounts: [{ name: 'workspace', mountPath: '/data' }],
        resources: { limits: { cpu: '2', memory: '4Gi' }, requests: { cpu: '500m', memory: '4Gi' } },
        securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
      },
    ],
    containers: [
      {
        name: 'main',
        image: 'busybox:1.37.0',
        command: ['/bin/sh', '-c', 'exit 0'],
        env: [
          { name: 'CI', value: 'true' },
          { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } },
        ],
        ports: [{ containerPort: 8080 }],
        volumeMounts: [
          { name: 'workspace', mountPath: '/data' },
          { name: 'dockhand', mountPath: '/dockhand', readOnly: true },
        ],
      },
    ],
    volumes: [
      { name: 'workspace', emptyDir: { sizeLimit: '10Gi' } },
      { name: 'dockhand', secret: { secretName: 'job-1-dockhand', defaultMode: 0o444 } },
    ],
  };
}

const good: Record<string, () => Obj> = {
  Job: () => ({
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: 'dockhand-1-1-abcdef', labels: { 'dockhand.dev/executor': 'builder-1' } },
    spec: {
      backoffLimit: 0,
      suspend: true,
      ttlSecondsAfterFinished: 600,
      template: { metadata: { labels: { ...labels }, annotations: { 'example.com/team': 'ci' } }, spec: podSpec() },
    },
  }),
  Pod: () => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'ci' }, spec: podSpec() }),
  Secret: () => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: {
      name: 'job-1-dockhand',
      ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: 'job-1', uid: 'u-1', controller: true }],
    },
    type: 'Opaque',
    immutable: true,
    data: { 'step-1.sh': Buffer.from('echo hi\n').toString('base64') },
    stringData: { 'secret.TOKEN': 'abc' },
  }),
  PersistentVolumeClaim: () => ({
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: 'job-1-workspace' },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } }, storageClassName: 'fast' },
  }),
  Deployment: () => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'dockhand-executor' },
    spec: {
      replicas: 1,
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { app: 'x' }, matchExpressions: [{ key: 'tier', operator: 'Exists' }] },
      template: {
        metadata: { labels: { app: 'x', tier: 'exec' } },
        spec: { containers: [{ name: 'executor', image: 'dockhand', command: ['dockhand', 'executor'] }] },
      },
    },
  }),
  ServiceAccount: () => ({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'dockhand-executor' } }),
  Role: () => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: { name: 'dockhand:executor' },
    rules: [
      { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'get'] },
      { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
    ],
  }),
  RoleBinding: () => ({
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: { name: 'dockhand-executor' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'dockhand-executor' },
    subjects: [
      { kind: 'ServiceAccount', name: 'dockhand-executor', namespace: 'dockhand' },
      { kind: 'Group', apiGroup: 'rbac.authorization.k8s.io', name: 'ci-admins' },
    ],
  }),
  NetworkPolicy: () => ({
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: 'dockhand-jobs' },
    spec: {
      podSelector: { matchLabels: { 'dockhand.dev/role': 'job' } },
      policyTypes: ['Ingress', 'Egress'],
      egress: [
        {
          to: [
            { ipBlock: { cidr: '0.0.0.0/0', except: ['169.254.169.254/32'] } },
            { ipBlock: { cidr: '::/0', except: ['fd00:ec2::254/128'] } },
          ],
        },
        {
          to: [{ namespaceSelector: {}, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
          ports: [
            { protocol: 'UDP', port: 53 },
            { protocol: 'TCP', port: 'dns-tcp' },
          ],
        },
      ],
    },
  }),
  ConfigMap: () => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'dockhand-executor-8g2h9c4d5f' },
    data: { EXECUTOR_RUNTIME: 'kubernetes', 'file.conf': 'a=b' },
    binaryData: { 'blob.bin': Buffer.from([1, 2, 3]).toString('base64') },
  }),
  Namespace: () => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: 'dockhand', labels: { 'pod-security.kubernetes.io/enforce': 'baseline' } },
  }),
};

/** A good object of `kind` after `change`; the validator's messages for it. */
function errorsAfter(kind: string, change: (o: Obj) => void): string[] {
  const obj = good[kind]();
  change(obj);
  return validateKubernetesObject(obj);
}

/** Asserts that the change is refused with a message containing each fragment. */
function refused(kind: string, change: (o: Obj) => void, ...fragments: string[]): void {
  const errors = errorsAfter(kind, change);
  for (const fragment of fragments) {
    expect(
      errors.some((e) => e.includes(fragment)),
      `expected "${fragment}" in ${JSON.stringify(errors)}`,
    ).toBe(true);
  }
}

describe('validateKubernetesObject', () => {
  it('knows the kinds the runtime and the install use, and accepts a good object of each', () => {
    expect(Object.keys(good).map((k) => KNOWN_KINDS.some((known) => known.endsWith(`/${k}`)))).not.toContain(false);
    for (const [kind, make] of Object.entries(good)) {
      expect(validateKubernetesObject(make()), kind).toEqual([]);
    }
  });

  it('refuses what is not an object of a kind it knows, rather than letting it through', () => {
    expect(validateKubernetesObject('kind: Pod')[0]).toMatch(/must be a JSON object, not string/);
    expect(validateKubernetesObject(null)[0]).toMatch(/not null/);
    expect(validateKubernetesObject({ metadata: { name: 'x' } })[0]).toMatch(/apiVersion and kind/);
    expect(validateKubernetesObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's' } })[0]).toMatch(
      /kind Service in apiVersion v1 is not known to this validator/,
    );
    // A known kind under another API version is another schema: not known either.
    expect(validateKubernetesObject({ ...good.Deployment(), apiVersion: 'extensions/v1beta1' })[0]).toMatch(
      /kind Deployment in apiVersion extensions\/v1beta1 is not known/,
    );
  });

  it("reports the schema's types, required properties, enums and quantity formats with the field's path", () => {
    refused('Job', (o) => (o.spec.backoffLimit = 'none'), 'spec.backoffLimit: must be integer');
    refused('Pod', (o) => delete o.spec.containers[0].name, 'spec.containers[0]: must have required property name');
    refused(
      'Pod',
      (o) => (o.spec.restartPolicy = 'Sometimes'),
      'spec.restartPolicy: must be equal to one of the allowed values',
    );
    refused(
      'PersistentVolumeClaim',
      (o) => (o.spec.resources.requests.storage = 'lots'),
      'spec.resources.requests.storage',
    );
    expect(errorsAfter('RoleBinding', (o) => delete o.roleRef)).toEqual([
      '(the object): must have required property roleRef',
    ]);
  });

  it('refuses unknown fields at every depth, in objects and in array elements', () => {
    refused('Job', (o) => (o.specs = {}), 'specs: unknown field "specs"');
    refused('Job', (o) => (o.metadata.label = { a: 'b' }), 'metadata.label: unknown field "label"');
    refused('Job', (o) => (o.spec.backOffLimit = 0), 'spec.backOffLimit: unknown field "backOffLimit"');
    refused(
      'Job',
      (o) => (o.spec.template.spec.initContainers[0].imagePullpolicy = 'Always'),
      'spec.template.spec.initContainers[0].imagePullpolicy: unknown field "imagePullpolicy"',
    );
    refused(
      'Pod',
      (o) => (o.spec.volumes[0].emptyDir.size = '1Gi'),
      'spec.volumes[0].emptyDir.size: unknown field "size"',
    );
    refused(
      'Pod',
      (o) => (o.spec.containers[0].securityContext = { readOnlyRootFS: true }),
      'spec.containers[0].securityContext.readOnlyRootFS: unknown field "readOnlyRootFS"',
    );
    refused('Role', (o) => (o.rules[1].resource = ['pods']), 'rules[1].resource: unknown field "resource"');
    refused(
      'NetworkPolicy',
      (o) => (o.spec.egress[0].to[0].ipBlock.exclude = []),
      'spec.egress[0].to[0].ipBlock.exclude: unknown field "exclude"',
    );
    refused('ConfigMap', (o) => (o.stringData = { a: 'b' }), 'stringData: unknown field "stringData"');
    // Maps are not fields: any key goes, as in labels, annotations, data, resources and selectors.
    expect(
      errorsAfter('Pod', (o) => {
        o.metadata.labels = { anything: 'x' };
        o.metadata.annotations = { 'example.com/whatever': 'y' };
        o.spec.nodeSelector = { pool: 'ci' };
        o.spec.containers[0].resources = { limits: { 'nvidia.com/gpu': '1' } };
      }),
    ).toEqual([]);
  });

  it('knows every field that @kubernetes/client-node knows for each kind (no false "unknown field")', () => {
    // An object with every property of the kind's type, recursively, from client-node's generated models (the
    // same Kubernetes version as kubernetes-models' schemas): the validator may call values invalid, but must not
    // call any of its fields unknown.
    const models = k8s as unknown as Record<
      string,
      { getAttributeTypeMap?(): { baseName: string; type: string }[] } | undefined
    >;
    const sample = (type: string, depth: number): unknown => {
      const array = /^Array<(.+)>$/.exec(type);
      if (array) return [sample(array[1], depth)];
      const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
      if (map) return { key: sample(map[1], depth) };
      switch (type) {
        case 'string':
        case 'IntOrString':
        case 'Date':
          return 'x';
        case 'number':
          return 1;
        case 'boolean':
          return true;
        case 'any':
          return {};
      }
      const model = models[type];
      if (!model?.getAttributeTypeMap) throw new Error(`no client-node model ${type}`);
      if (depth > 15) return {};
      return Object.fromEntries(model.getAttributeTypeMap().map((a) => [a.baseName, sample(a.type, depth + 1)]));
    };
    for (const known of KNOWN_KINDS) {
      const kind = known.split('/').at(-1)!;
      const obj = sample(`V1${kind}`, 0) as Obj;
      Object.assign(obj, { apiVersion: known.slice(0, -kind.length - 1), kind });
      const unknown = validateKubernetesObject(obj).filter((e) => e.includes('unknown field'));
      expect(unknown, kind).toEqual([]);
    }
    // And in the same full objects, a field nobody knows is found however deep it is.
    const pod = sample('V1Pod', 0) as Obj;
    Object.assign(pod, { apiVersion: 'v1', kind: 'Pod' });
    pod.spec.containers[0].lifecycle.preStop.exec.notAField = 'sh';
    pod.spec.volumes[0].csi.nodePublishSecretRef.alsoNot = 'x';
    pod.status.containerStatuses[0].state.terminated.neither = 'TERM';
    expect(validateKubernetesObject(pod).filter((e) => e.includes('unknown field'))).toEqual([
      'spec.containers[0].lifecycle.preStop.exec.notAField: unknown field "notAField"',
      'spec.volumes[0].csi.nodePublishSecretRef.alsoNot: unknown field "alsoNot"',
      'status.containerStatuses[0].state.terminated.neither: unknown field "neither"',
    ]);
  });

  it('refuses names the server refuses, per kind', () => {
    refused(
      'Secret',
      (o) => (o.metadata.name = 'Bad_Name'),
      'metadata.name: "Bad_Name" must be a lowercase RFC 1123 subdomain',
    );
    refused('ConfigMap', (o) => (o.metadata.name = 'a'.repeat(254)), 'must be no more than 253 characters');
    refused('Namespace', (o) => (o.metadata.name = 'a.b'), 'metadata.name: "a.b" must be a lowercase RFC 1123 label');
    refused('Namespace', (o) => (o.metadata.namespace = 'default'), 'metadata.namespace: not allowed');
    refused('Job', (o) => (o.metadata.name = 'j'.repeat(64)), 'metadata.name', 'no more than 63 characters');
    refused('Pod', (o) => (o.metadata.namespace = 'CI'), 'metadata.namespace: "CI"');
    refused('ServiceAccount', (o) => delete o.metadata.name, 'metadata.name: required');
    refused('Role', (o) => (o.metadata.name = 'a/b'), 'metadata.name: "a/b" may not contain "/"');
    refused(
      'Pod',
      (o) => (o.spec.containers[0].name = 'Main'),
      'spec.containers[0].name: "Main" must be a lowercase RFC 1123 label',
    );
    refused('Pod', (o) => (o.spec.volumes[0].name = 'work_space'), 'spec.volumes[0].name');
    // A subdomain is fine where one is allowed, and generateName stands in for a name.
    expect(errorsAfter('Secret', (o) => (o.metadata.name = 'job-1.dockhand'))).toEqual([]);
    expect(
      errorsAfter('Pod', (o) => {
        delete o.metadata.name;
        o.metadata.generateName = 'dockhand-';
      }),
    ).toEqual([]);
  });

  it('refuses label keys and values the server refuses, on objects, pod templates and selectors', () => {
    refused(
      'Pod',
      (o) => (o.metadata.labels = { a: 'v'.repeat(64) }),
      'metadata.labels.a: label value',
      'no more than 63',
    );
    refused('Pod', (o) => (o.metadata.labels = { a: 'has space' }), 'label value "has space"');
    refused('Pod', (o) => (o.metadata.labels = { 'Bad_Prefix/x': 'y' }), 'label key "Bad_Prefix/x" has a prefix');
    refused('Pod', (o) => (o.metadata.annotations = { '/x': 'y' }), 'annotation key "/x" has an empty prefix');
    refused(
      'Job',
      (o) => (o.spec.template.metadata.labels['dockhand.dev/executor'] = '-leading'),
      'spec.template.metadata.labels[dockhand.dev/executor]: label value "-leading"',
    );
    refused(
      'NetworkPolicy',
      (o) => (o.spec.podSelector.matchLabels = { role: 'x'.repeat(70) }),
      'spec.podSelector.matchLabels.role',
    );
    refused(
      'Deployment',
      (o) => (o.spec.selector.matchExpressions = [{ key: 'tier', operator: 'In' }]),
      'spec.selector.matchExpressions[0].values: required for operator In',
    );
    refused('Pod', (o) => (o.metadata.annotations = { big: 'x'.repeat(256 * 1024) }), 'more than the 256 KiB');
    expect(errorsAfter('Pod', (o) => (o.metadata.labels = { 'example.com/empty': '' }))).toEqual([]);
  });

  it('refuses a pod whose containers or volumes do not fit together', () => {
    refused(
      'Job',
      (o) => (o.spec.template.spec.containers[0].name = 'setup'),
      'spec.template.spec.containers[0].name: duplicate container name setup (also spec.template.spec.initContainers[0])',
    );
    refused(
      'Pod',
      (o) => o.spec.containers[0].volumeMounts.push({ name: 'cache', mountPath: '/cache' }),
      'spec.containers[0].volumeMounts[2].name: volume "cache" is not among the pod\'s volumes',
    );
    refused(
      'Pod',
      (o) => o.spec.containers[0].volumeMounts.push({ name: 'dockhand', mountPath: '/data' }),
      '/data is mounted twice',
    );
    refused('Pod', (o) => o.spec.volumes.push({ name: 'workspace', emptyDir: {} }), 'duplicate volume workspace');
    refused('Pod', (o) => (o.spec.volumes[0] = { name: 'workspace' }), 'exactly one volume source (has none)');
    refused(
      'Pod',
      (o) => (o.spec.volumes[0].hostPath = { path: '/' }),
      'exactly one volume source (has emptyDir, hostPath)',
    );
    refused('Pod', (o) => (o.spec.containers = []), 'spec.containers: at least one container is required');
    refused('Pod', (o) => delete o.spec.containers[0].image, 'spec.containers[0].image: required');
    refused('Pod', (o) => (o.spec.containers[0].env[0].name = 'A=B'), 'spec.containers[0].env[0].name');
    refused(
      'Pod',
      (o) => (o.spec.containers[0].env[0].valueFrom = { fieldRef: { fieldPath: 'metadata.name' } }),
      'both value and valueFrom',
    );
    refused('Pod', (o) => (o.spec.containers[0].ports[0].containerPort = 70000), 'not between 1 and 65535');
    refused(
      'Pod',
      (o) => (o.spec.initContainers[0].resources.requests.memory = '5Gi'),
      'spec.initContainers[0].resources.requests.memory: 5Gi is more than its limit 4Gi',
    );
    refused('Pod', (o) => (o.spec.activeDeadlineSeconds = 0), 'spec.activeDeadlineSeconds: must be at least 1');
  });

  it("refuses a Job's pod that would restart, and a Job selector the server makes itself", () => {
    refused(
      'Job',
      (o) => (o.spec.template.spec.restartPolicy = 'Always'),
      `spec.template.spec.restartPolicy: "Always": a Job's pod must have restartPolicy Never or OnFailure`,
    );
    refused('Job', (o) => delete o.spec.template.spec.restartPolicy, 'spec.template.spec.restartPolicy: required');
    expect(errorsAfter('Job', (o) => (o.spec.template.spec.restartPolicy = 'OnFailure'))).toEqual([]);
    refused('Job', (o) => (o.spec.selector = { matchLabels: { ...labels } }), 'spec.selector: the server makes');
    refused('Job', (o) => (o.spec.backoffLimit = -1), 'spec.backoffLimit: must be at least 0');
  });

  it('refuses a Deployment whose selector misses its pods or whose pods would not restart', () => {
    refused('Deployment', (o) => (o.spec.template.metadata.labels = { app: 'y' }), 'do not match');
    refused('Deployment', (o) => (o.spec.selector = {}), 'spec.selector: must not be empty');
    refused('Deployment', (o) => (o.spec.template.spec.restartPolicy = 'Never'), 'restartPolicy Always');
    refused('Deployment', (o) => (o.spec.strategy.rollingUpdate = { maxSurge: 1 }), 'strategy type Recreate');
    refused('Deployment', (o) => (o.spec.replicas = -1), 'spec.replicas: must be at least 0');
  });

  it('refuses Secret and ConfigMap keys and sizes the server refuses', () => {
    refused('Secret', (o) => (o.data['bad key'] = 'eA=='), 'data: key "bad key"');
    refused('Secret', (o) => (o.type = 'kubernetes.io/dockerconfigjson'), 'data[.dockerconfigjson]: required');
    refused('Secret', (o) => (o.stringData.big = 'x'.repeat(2 ** 20)), 'more than the 1 MiB a Secret may hold');
    refused('ConfigMap', (o) => (o.binaryData['file.conf'] = 'eA=='), 'data[file.conf]: also in binaryData');
    refused('ConfigMap', (o) => (o.data['..'] = 'x'), 'key ".."');
  });

  it('refuses a claim without access modes or size', () => {
    refused('PersistentVolumeClaim', (o) => (o.spec.accessModes = []), 'spec.accessModes: at least one');
    refused('PersistentVolumeClaim', (o) => delete o.spec.resources, 'spec.resources.requests.storage: required');
    refused('PersistentVolumeClaim', (o) => (o.spec.resources.requests.storage = '0'), 'more than zero');
  });

  it('refuses RBAC rules and bindings the server refuses', () => {
    refused('Role', (o) => (o.rules[0].verbs = []), 'rules[0].verbs: at least one verb');
    refused('Role', (o) => delete o.rules[0].apiGroups, 'rules[0].apiGroups: resource rules must name');
    refused('Role', (o) => (o.rules[0].nonResourceURLs = ['/healthz']), 'not allowed in a namespaced Role');
    refused('RoleBinding', (o) => (o.roleRef.apiGroup = 'rbac'), 'roleRef.apiGroup: must be rbac.authorization.k8s.io');
    refused('RoleBinding', (o) => (o.roleRef.kind = 'ServiceAccount'), 'roleRef.kind: must be Role or ClusterRole');
    refused('RoleBinding', (o) => (o.subjects[0].kind = 'Robot'), 'subjects[0].kind');
    refused('RoleBinding', (o) => (o.subjects[0].apiGroup = 'v1'), 'subjects[0].apiGroup: must be ""');
    refused('RoleBinding', (o) => delete o.subjects[1].apiGroup, 'subjects[1].apiGroup');
  });

  it('refuses NetworkPolicy peers and CIDRs the server refuses', () => {
    refused(
      'NetworkPolicy',
      (o) => (o.spec.egress[0].to[0].ipBlock.except = ['10.0.0.0/8', '169.254.169.254']),
      'spec.egress[0].to[0].ipBlock.except[1]: "169.254.169.254" is not a CIDR',
    );
    refused(
      'NetworkPolicy',
      (o) => (o.spec.egress[0].to[0].ipBlock = { cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] }),
      'except[0]: 192.168.0.0/16 is not inside 10.0.0.0/8',
    );
    refused(
      'NetworkPolicy',
      (o) => (o.spec.egress[0].to[1].ipBlock.except = ['169.254.169.254/32']),
      'is not inside ::/0',
    );
    refused('NetworkPolicy', (o) => (o.spec.egress[0].to[0].ipBlock.cidr = '0.0.0.0/33'), 'is not a CIDR');
    refused('NetworkPolicy', (o) => (o.spec.policyTypes = ['Outbound']), '"Outbound" must be Ingress or Egress');
    refused(
      'NetworkPolicy',
      (o) => (o.spec.egress[0].to[0].podSelector = {}),
      'ipBlock may not be combined with podSelector',
    );
    refused('NetworkPolicy', (o) => (o.spec.egress[1].to[0] = {}), 'must have an ipBlock, a podSelector');
    refused('NetworkPolicy', (o) => (o.spec.egress[1].ports[0].protocol = 'ICMP'), 'must be TCP, UDP or SCTP');
  });

  it('reads Kubernetes quantities', () => {
    expect(parseQuantity('500m')).toBe(0.5);
    expect(parseQuantity('2')).toBe(2);
    expect(parseQuantity('1Ki')).toBe(1024);
    expect(parseQuantity('4Gi')).toBe(4 * 2 ** 30);
    expect(parseQuantity('4G')).toBe(4e9);
    expect(parseQuantity('1e3')).toBe(1000);
    expect(parseQuantity('.5')).toBe(0.5);
    expect(parseQuantity('lots')).toBeUndefined();
    expect(parseQuantity('4GB')).toBeUndefined();
  });
});
