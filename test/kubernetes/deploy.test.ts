// The kustomize installation in deploy/kubernetes, rendered with `kubectl kustomize` (no cluster needed): every
// object must be one an API server accepts, and the properties the runtime and its documentation promise must
// hold: one replica, the Role exactly as the runtime needs it, the token only in a Secret, the metadata address
// blocked for job pods, the overlays' volume types. Without kubectl this fails; it does not skip.
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { BlockList } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { loadExecutorConfig } from '../../src/executor/config.js';
import { validateKubernetesObject } from '../support/kubernetes/validate.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = path.join(ROOT, 'deploy/kubernetes');
const NAMESPACE = 'dockhand';
const OVERLAYS = ['emptydir', 'pvc'] as const;
/** What the test's token files hold: a value that must appear nowhere but in the Secret. */
const TOKEN = 'deploy-test-token-5f0c1d9e8b7a6f4e3d2c1b0a';

type Obj = Record<string, any>;

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** The Role of the runtime (src/executor/runtimes/kubernetes), per the calls it makes. */
const BASE_RULES: Rule[] = [
  { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'get', 'list', 'delete', 'patch'] },
  { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
  { apiGroups: [''], resources: ['pods/log'], verbs: ['get'] },
  { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
];
const PVC_RULE: Rule = { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['create'] };

/** The runtime's variables (docs/kubernetes-runtime.md); a ConfigMap key outside this list is a typo. */
const KUBERNETES_VARIABLES = new Set(
  [
    'CONFIG_PATH',
    'CONTEXT',
    'NAMESPACE',
    'NODE_NAME',
    'NODE_SELECTOR',
    'NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS',
    'NODE_REQUIRED_AFFINITY_MATCH_FIELDS',
    'POD_AFFINITY',
    'POD_ANTI_AFFINITY',
    'NODE_TOLERATIONS',
    'RESOURCE_LIMIT_CPU',
    'RESOURCE_LIMIT_MEMORY',
    'RESOURCE_REQUEST_CPU',
    'RESOURCE_REQUEST_MEMORY',
    'IMAGE_PULL_SECRETS',
    'JOB_ANNOTATIONS',
    'JOB_POD_ANNOTATIONS',
    'KEEP_JOBS',
    'JOB_DEADLINE',
    'JOB_VOLUME_TYPE',
    'JOB_VOLUME_SIZE',
    'STORAGE_CLASS',
    'ADDITIONAL_JOB_VOLUMES',
    'ADDITIONAL_JOB_VOLUME_MOUNTS',
    'RUN_AS_USER',
    'RUN_AS_GROUP',
    'FS_GROUP',
    'JOB_STEP_IMAGE',
    'DEFAULT_IMAGE',
    'SCHEDULE_TIMEOUT',
    'TERMINATION_GRACE_PERIOD',
  ].map((name) => `EXECUTOR_KUBERNETES_${name}`),
);

/** Pairs of names for one setting: the runtime refuses to start with both set. */
const SAME_SETTING = [
  ['EXECUTOR_JOB_NUM_CPUS', 'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU'],
  ['EXECUTOR_JOB_MEMORY', 'EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY'],
  ['EXECUTOR_JOB_DISK', 'EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE'],
];

let work: string;

async function kubectl(...args: string[]): Promise<string> {
  try {
    return (await run('kubectl', args, { maxBuffer: 16 * 2 ** 20 })).stdout;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error(
        'kubectl is not installed: this test renders deploy/kubernetes with `kubectl kustomize` (no cluster needed). ' +
          'Install kubectl 1.27 or newer.',
      );
    throw err;
  }
}

/** The objects kustomize renders from a directory of the test's copy of deploy/kubernetes. */
async function render(dir: string): Promise<Obj[]> {
  const text = await kubectl('kustomize', path.join(work, dir));
  return parseAllDocuments(text).map((doc) => {
    if (doc.errors.length) throw new Error(`${dir}: ${doc.errors[0].message}`);
    return doc.toJS() as Obj;
  });
}

function only(objects: Obj[], kind: string, name?: string): Obj {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  expect(found, `one ${kind}${name ? ` ${name}` : ''}`).toHaveLength(1);
  return found[0];
}

const sortedRules = (rules: Rule[]): string[] =>
  rules.map((r) => JSON.stringify([[...r.apiGroups].sort(), [...r.resources].sort(), [...r.verbs].sort()])).sort();

function executorContainer(objects: Obj[]): Obj {
  const spec = only(objects, 'Deployment', 'dockhand-executor').spec.template.spec;
  expect(spec.containers).toHaveLength(1);
  return spec.containers[0];
}

function settings(objects: Obj[]): Record<string, string> {
  const container = executorContainer(objects);
  const name = container.envFrom[0].configMapRef.name;
  return only(objects, 'ConfigMap', name).data;
}

/** The executor container's environment as the kubelet would make it: envFrom first, then env over it. */
function executorEnv(objects: Obj[]): NodeJS.ProcessEnv {
  const deployment = only(objects, 'Deployment', 'dockhand-executor');
  const env: NodeJS.ProcessEnv = { ...settings(objects) };
  for (const e of executorContainer(objects).env as Obj[]) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      env[e.name] = Buffer.from(only(objects, 'Secret', ref.name).data[ref.key], 'base64').toString();
    } else if (e.valueFrom?.fieldRef?.fieldPath === 'metadata.namespace') env[e.name] = deployment.metadata.namespace;
    else throw new Error(`no value for ${e.name} in this test`);
  }
  return env;
}

/** Whether an egress peer lets a pod reach `address`. */
function peerReaches(peer: Obj, address: string): boolean {
  if (!peer.ipBlock) return false;
  const [net, bits] = String(peer.ipBlock.cidr).split('/');
  const family = net.includes(':') ? 'ipv6' : 'ipv4';
  if (family !== (address.includes(':') ? 'ipv6' : 'ipv4')) return false;
  const inside = new BlockList();
  inside.addSubnet(net, Number(bits), family);
  if (!inside.check(address, family)) return false;
  const excepted = new BlockList();
  for (const cidr of peer.ipBlock.except ?? []) {
    const [n, b] = String(cidr).split('/');
    excepted.addSubnet(n, Number(b), family);
  }
  return !excepted.check(address, family);
}

let prepared: Promise<void> | undefined;

/**
 * The test's copy of deploy/kubernetes, made once: a copy, so that an operator's own token file in the working tree
 * is never read, with the test's token files. Every test awaits it, so that without kubectl every test fails
 * (a failing beforeAll would only mark them skipped).
 */
function prepare(): Promise<void> {
  prepared ??= (async () => {
    await kubectl('version', '--client');
    work = await mkdtemp(path.join(os.tmpdir(), 'dockhand-deploy-'));
    await cp(DEPLOY, work, { recursive: true, filter: (src) => path.basename(src) !== 'executor-token.env' });
    for (const overlay of OVERLAYS)
      await writeFile(path.join(work, 'overlays', overlay, 'executor-token.env'), `token=${TOKEN}\n`);
  })();
  return prepared;
}

beforeEach(prepare);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('deploy/kubernetes', () => {
  for (const dir of ['base', ...OVERLAYS.map((o) => `overlays/${o}`)]) {
    it(`${dir}: renders objects an API server accepts, all in namespace ${NAMESPACE}`, async () => {
      const objects = await render(dir);
      expect(objects.length).toBeGreaterThan(0);
      for (const obj of objects) {
        expect(validateKubernetesObject(obj), `${obj.kind} ${obj.metadata?.name}`).toEqual([]);
        if (obj.kind === 'Namespace') expect(obj.metadata.name).toBe(NAMESPACE);
        else expect(obj.metadata.namespace, `${obj.kind} ${obj.metadata.name}`).toBe(NAMESPACE);
      }
      const kinds = objects.map((o) => o.kind).sort();
      expect(kinds).toEqual(
        [
          'ConfigMap',
          'Deployment',
          'Namespace',
          'NetworkPolicy',
          'NetworkPolicy',
          'Role',
          'RoleBinding',
          'ServiceAccount',
          ...(dir === 'base' ? [] : ['Secret']),
        ].sort(),
      );
    });
  }

  it('runs one hardened executor replica, recreated rather than rolled, with its service account token', async () => {
    const objects = await render('overlays/emptydir');
    const deployment = only(objects, 'Deployment', 'dockhand-executor');
    expect(deployment.spec.replicas).toBe(1);
    expect(deployment.spec.strategy).toEqual({ type: 'Recreate' });
    const pod = deployment.spec.template.spec;
    expect(pod.serviceAccountName).toBe(only(objects, 'ServiceAccount').metadata.name);
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(60);
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      runAsUser: 10001,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const container = executorContainer(objects);
    expect(container.command).toEqual(['dockhand', 'executor']);
    expect(container.image).toBe('dockhand:latest');
    expect(container.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    });
    expect(container.livenessProbe).toBeUndefined();
    expect(container.resources.requests).toBeDefined();
    expect(container.resources.limits.memory).toBeDefined();
    // The one writable place, /tmp, is an emptyDir.
    const tmp = container.volumeMounts.find((m: Obj) => m.mountPath === '/tmp');
    expect(pod.volumes.find((v: Obj) => v.name === tmp.name)).toMatchObject({ emptyDir: {} });
    // Jobs go to the executor's own namespace, wherever kustomize puts it.
    expect(container.env.find((e: Obj) => e.name === 'EXECUTOR_KUBERNETES_NAMESPACE')).toEqual({
      name: 'EXECUTOR_KUBERNETES_NAMESPACE',
      valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } },
    });
  });

  it('grants exactly the calls the runtime makes: the claim rule only in the pvc overlay', async () => {
    // The file the runtime's tests read must be one plain Role with exactly these rules.
    const file = parse(await readFile(path.join(DEPLOY, 'base/role.yaml'), 'utf8')) as Obj;
    expect(file.kind).toBe('Role');
    expect(file.metadata.name).toBe('dockhand-executor');
    expect(sortedRules(file.rules)).toEqual(sortedRules(BASE_RULES));

    for (const dir of ['base', 'overlays/emptydir', 'overlays/pvc']) {
      const objects = await render(dir);
      const role = only(objects, 'Role', 'dockhand-executor');
      const expected = dir === 'overlays/pvc' ? [...BASE_RULES, PVC_RULE] : BASE_RULES;
      expect(sortedRules(role.rules), dir).toEqual(sortedRules(expected));
      expect(objects.filter((o) => o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')).toEqual([]);
      const binding = only(objects, 'RoleBinding');
      expect(binding.roleRef).toEqual({
        apiGroup: 'rbac.authorization.k8s.io',
        kind: 'Role',
        name: 'dockhand-executor',
      });
      expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'dockhand-executor', namespace: NAMESPACE }]);
    }
  });

  it('takes the token from a Secret through secretKeyRef, and from nowhere else', async () => {
    const base = executorContainer(await render('base'));
    expect(base.env.find((e: Obj) => e.name === 'EXECUTOR_FRONTEND_PASSWORD')).toEqual({
      name: 'EXECUTOR_FRONTEND_PASSWORD',
      valueFrom: { secretKeyRef: { name: 'dockhand-executor-token', key: 'token' } },
    });
    for (const overlay of OVERLAYS) {
      const dir = `overlays/${overlay}`;
      const text = await kubectl('kustomize', path.join(work, dir));
      const objects = await render(dir);
      const secret = only(objects, 'Secret');
      expect(secret.metadata.name).toMatch(/^dockhand-executor-token-[a-z0-9]+$/);
      expect(secret.type).toBe('Opaque');
      // The whole token, without the file's final newline.
      expect(Buffer.from(secret.data.token, 'base64').toString()).toBe(TOKEN);
      const container = executorContainer(objects);
      const password = container.env.filter((e: Obj) => e.name === 'EXECUTOR_FRONTEND_PASSWORD');
      expect(password).toEqual([
        {
          name: 'EXECUTOR_FRONTEND_PASSWORD',
          valueFrom: { secretKeyRef: { name: secret.metadata.name, key: 'token' } },
        },
      ]);
      const data = settings(objects);
      expect(
        Object.keys(data).filter(
          (k) => /PASSWORD|TOKEN|SECRET/.test(k) && k !== 'EXECUTOR_KUBERNETES_IMAGE_PULL_SECRETS',
        ),
      ).toEqual([]);
      // The token's value is in the Secret's data (base64) and nowhere in the rendered text.
      expect(text).not.toContain(TOKEN);
      expect(text.split(secret.data.token)).toHaveLength(2);
    }
  });

  it('refuses to render an overlay without the token file, so nothing is applied without a token', async () => {
    // The repository as checked out: no token file (an operator's own is left out of the copy).
    const checkout = await mkdtemp(path.join(os.tmpdir(), 'dockhand-deploy-no-token-'));
    try {
      await cp(DEPLOY, checkout, { recursive: true, filter: (src) => path.basename(src) !== 'executor-token.env' });
      for (const overlay of OVERLAYS)
        await expect(kubectl('kustomize', path.join(checkout, 'overlays', overlay))).rejects.toThrow(
          /executor-token\.env/,
        );
    } finally {
      await rm(checkout, { recursive: true, force: true });
    }
  });

  it('keeps the settings in the ConfigMap: known names, one name per setting, pinned images, the kubernetes runtime', async () => {
    for (const dir of ['base', ...OVERLAYS.map((o) => `overlays/${o}`)]) {
      const data = settings(await render(dir));
      expect(data.EXECUTOR_RUNTIME, dir).toBe('kubernetes');
      expect(data.EXECUTOR_NAME, dir).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
      expect(Number(data.EXECUTOR_MAXIMUM_NUM_JOBS), dir).toBeGreaterThan(0);
      expect(data.EXECUTOR_QUEUE_NAME, dir).toBeTruthy();
      // The coordinator's URL is the operator's to set; it is there, empty, so that it is not forgotten silently.
      expect(data.EXECUTOR_FRONTEND_URL, dir).toBe('');
      // Set by the Deployment from the pod's namespace, never by the ConfigMap (the pod's env would win anyway).
      expect(data.EXECUTOR_KUBERNETES_NAMESPACE, dir).toBeUndefined();
      for (const key of Object.keys(data).filter((k) => k.startsWith('EXECUTOR_KUBERNETES_')))
        expect(KUBERNETES_VARIABLES.has(key), `${dir}: ${key} is not a variable of the runtime`).toBe(true);
      for (const [ours, theirs] of SAME_SETTING)
        expect(!!data[ours] && !!data[theirs], `${dir}: ${ours} and ${theirs} are one setting`).toBe(false);
      for (const image of [data.EXECUTOR_KUBERNETES_JOB_STEP_IMAGE, data.EXECUTOR_KUBERNETES_DEFAULT_IMAGE]) {
        expect(image, dir).toMatch(/:[\w.-]+$/);
        expect(image, dir).not.toMatch(/:latest$/);
      }
    }
  });

  it("is accepted by the executor's own configuration, once the coordinator's URL is set", async () => {
    for (const overlay of OVERLAYS) {
      const env = executorEnv(await render(`overlays/${overlay}`));
      // As shipped, the executor refuses to start and says what to set.
      expect(() => loadExecutorConfig(env)).toThrow(/EXECUTOR_FRONTEND_URL must be set/);
      const config = loadExecutorConfig({ ...env, EXECUTOR_FRONTEND_URL: 'http://dockhand.internal:7070' });
      expect(config.frontendPassword).toBe(TOKEN);
      expect(config.runtime.runtime).toBe('kubernetes');
      expect(config.runtime.executorName).toBe(env.EXECUTOR_NAME);
      expect(config.runtime.options).toMatchObject({
        namespace: NAMESPACE,
        volumeType: overlay === 'pvc' ? 'pvc' : 'emptyDir',
        stepImage: env.EXECUTOR_KUBERNETES_JOB_STEP_IMAGE,
      });
    }
  });

  it('sets each overlay’s volume type (the pvc overlay a size, and no storage class unless chosen)', async () => {
    const base = settings(await render('base'));
    expect(base.EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE).toBeUndefined();
    const emptyDir = settings(await render('overlays/emptydir'));
    expect(emptyDir.EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE).toBe('emptyDir');
    const pvc = settings(await render('overlays/pvc'));
    expect(pvc.EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE).toBe('pvc');
    expect(pvc.EXECUTOR_KUBERNETES_JOB_VOLUME_SIZE).toBe('10Gi');
    expect(pvc.EXECUTOR_KUBERNETES_STORAGE_CLASS).toBeUndefined();
    // The overlays merge into the base's settings rather than replace them.
    for (const data of [emptyDir, pvc]) expect(data).toMatchObject({ ...base, EXECUTOR_FRONTEND_URL: '' });
  });

  it('keeps job pods from the metadata address and from all ingress; the executor from all ingress', async () => {
    const objects = await render('overlays/emptydir');
    const policies = objects.filter((o) => o.kind === 'NetworkPolicy');
    const jobs = policies.find((p) => p.spec.podSelector.matchLabels?.['dockhand.dev/role'] === 'job');
    expect(jobs, 'a NetworkPolicy for pods labelled dockhand.dev/role=job').toBeDefined();
    expect(jobs!.spec.podSelector).toEqual({ matchLabels: { 'dockhand.dev/role': 'job' } });
    expect(jobs!.spec.policyTypes).toEqual(expect.arrayContaining(['Ingress', 'Egress']));
    expect(jobs!.spec.ingress ?? []).toEqual([]);
    const egress: Obj[] = jobs!.spec.egress;
    // Every egress rule names its peers (a rule without `to` would allow everything), and none reaches metadata.
    for (const rule of egress) expect(rule.to?.length, JSON.stringify(rule)).toBeGreaterThan(0);
    const peers = egress.flatMap((rule) => rule.to as Obj[]);
    expect(peers.some((peer) => peerReaches(peer, '169.254.169.254'))).toBe(false);
    expect(peers.some((peer) => peerReaches(peer, 'fd00:ec2::254'))).toBe(false);
    expect(peers).toContainEqual({ ipBlock: { cidr: '0.0.0.0/0', except: ['169.254.169.254/32'] } });
    // The rest of the internet is reachable: checkouts and downloads need it.
    expect(peers.some((peer) => peerReaches(peer, '140.82.112.3'))).toBe(true);

    // The executor's policy selects the executor's pod (all its selector's labels are the pod's), not job pods.
    const podLabels: Record<string, string> = only(objects, 'Deployment').spec.template.metadata.labels;
    const executor = policies.find((p) => p !== jobs);
    const selected = Object.entries(executor!.spec.podSelector.matchLabels as Record<string, string>);
    expect(selected.length).toBeGreaterThan(0);
    for (const [key, value] of selected) expect(podLabels[key], key).toBe(value);
    expect(executor!.spec.podSelector.matchLabels['dockhand.dev/role']).toBeUndefined();
    expect(executor!.spec.policyTypes).toEqual(expect.arrayContaining(['Ingress', 'Egress']));
    expect(executor!.spec.ingress ?? []).toEqual([]);
    expect(executor!.spec.egress).toEqual([{}]);
  });

  it("an operator's overlay on top sets the image, the coordinator and the namespace, and everything follows", async () => {
    // As docs/kubernetes-runtime.md shows it: an overlay of one's own that uses the repository's.
    const mine = path.join(work, 'mine');
    await mkdir(mine);
    await writeFile(
      path.join(mine, 'kustomization.yaml'),
      [
        'apiVersion: kustomize.config.k8s.io/v1beta1',
        'kind: Kustomization',
        'namespace: ci-jobs',
        'resources:',
        '  - ../overlays/emptydir',
        'configMapGenerator:',
        '  - name: dockhand-executor',
        '    behavior: merge',
        '    literals:',
        '      - EXECUTOR_FRONTEND_URL=http://dockhand.internal:7070',
        '      - EXECUTOR_NAME=ci-cluster-1',
        'images:',
        '  - name: dockhand',
        '    newName: registry.example.com/dockhand',
        '    newTag: 0.2.0',
        '',
      ].join('\n'),
    );
    const objects = await render('mine');
    for (const obj of objects) expect(validateKubernetesObject(obj), `${obj.kind} ${obj.metadata.name}`).toEqual([]);
    expect(only(objects, 'Namespace').metadata.name).toBe('ci-jobs');
    for (const obj of objects.filter((o) => o.kind !== 'Namespace')) expect(obj.metadata.namespace).toBe('ci-jobs');
    expect(only(objects, 'RoleBinding').subjects[0].namespace).toBe('ci-jobs');
    expect(executorContainer(objects).image).toBe('registry.example.com/dockhand:0.2.0');
    const data = settings(objects);
    expect(data.EXECUTOR_FRONTEND_URL).toBe('http://dockhand.internal:7070');
    expect(data.EXECUTOR_NAME).toBe('ci-cluster-1');
    expect(data.EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE).toBe('emptyDir');
    const secret = only(objects, 'Secret');
    const password = executorContainer(objects).env.find((e: Obj) => e.name === 'EXECUTOR_FRONTEND_PASSWORD');
    expect(password.valueFrom.secretKeyRef.name).toBe(secret.metadata.name);
  });
});
