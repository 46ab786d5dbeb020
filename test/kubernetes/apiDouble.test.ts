// The Kubernetes API double checked against the real client: kubectl creates, watches, follows, reviews access and
// deletes through it, and direct HTTP checks pin the Status bodies and the behaviours the kubernetes runtime relies
// on (watch expiry, OOMKilled, deadlines, eviction, scheduling, garbage collection).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCKER_TEST_IMAGE } from '../support/docker.js';
import { startKubeDouble, type KubeDouble } from '../support/kubernetes/index.js';
import { until } from '../support/wait.js';

const NS = 'dockhand';
/** The executor may look at Jobs and pods but not create Jobs: enough to see both answers of an access review. */
const EXECUTOR_RULES = [
  { apiGroups: ['batch'], resources: ['jobs'], verbs: ['get', 'list', 'watch'] },
  { apiGroups: [''], resources: ['pods', 'pods/log'], verbs: ['get', 'list', 'watch'] },
];

let double: KubeDouble;
let dir: string;
let adminConfig: string;
let executorConfig: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'kube-double-test-'));
  double = await startKubeDouble({ namespaces: [NS], executorRules: EXECUTOR_RULES, housekeepingIntervalMs: 250 });
  adminConfig = await double.writeKubeconfig(dir, 'admin');
  executorConfig = await double.writeKubeconfig(dir, 'executor');
});

afterAll(async () => {
  await double?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A running kubectl whose output is collected as it comes. */
function kubectlProcess(args: string[], config = adminConfig): { child: ChildProcess; out: Run; done: Promise<Run> } {
  const child = spawn('kubectl', ['--kubeconfig', config, '--cache-dir', path.join(dir, 'cache'), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Run = { code: null, stdout: '', stderr: '' };
  child.stdout!.on('data', (c: Buffer) => (out.stdout += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (out.stderr += c.toString('utf8')));
  const done = new Promise<Run>((resolve) =>
    child.on('close', (code) => {
      out.code = code;
      resolve(out);
    }),
  );
  return { child, out, done };
}

function kubectl(args: string[], config = adminConfig): Promise<Run> {
  return kubectlProcess(args, config).done;
}

async function api(
  method: string,
  urlPath: string,
  body?: unknown,
  token = double.adminToken,
  contentType = 'application/json',
) {
  const res = await fetch(double.url + urlPath, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'Content-Type': contentType }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    text,
    json: text ? (JSON.parse(text) as Record<string, any>) : undefined,
  };
}

/** Reads a watch until it ends, or until `enough` says the events so far suffice. */
async function watchEvents(
  urlPath: string,
  enough: (events: any[]) => boolean = () => false,
): Promise<{ status: number; events: any[] }> {
  const controller = new AbortController();
  const res = await fetch(double.url + urlPath, {
    headers: { Authorization: `Bearer ${double.adminToken}` },
    signal: controller.signal,
  });
  const events: any[] = [];
  let buffered = '';
  const decoder = new TextDecoder();
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = buffered.indexOf('\n')) !== -1) {
        events.push(JSON.parse(buffered.slice(0, newline)));
        buffered = buffered.slice(newline + 1);
      }
      if (enough(events)) {
        controller.abort();
        break;
      }
    }
  } catch (err) {
    if (!controller.signal.aborted) throw err;
  }
  return { status: res.status, events };
}

function job(name: string, podSpec: Record<string, unknown>, jobSpec: Record<string, unknown> = {}) {
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name },
    spec: {
      backoffLimit: 0,
      ...jobSpec,
      template: { spec: { restartPolicy: 'Never', terminationGracePeriodSeconds: 0, ...podSpec } },
    },
  };
}

const podsOf = (jobName: string) =>
  double.objects('pods', NS).filter((p) => p.metadata.labels?.['job-name'] === jobName);
const containerStatus = (pod: any, name: string) =>
  [...(pod?.status?.initContainerStatuses ?? []), ...(pod?.status?.containerStatuses ?? [])].find(
    (s: any) => s.name === name,
  );
const hasCondition = (obj: any, type: string) =>
  (obj?.status?.conditions ?? []).some((c: any) => c.type === type && c.status === 'True');

describe('kubectl against the double', () => {
  it('creates a Job from YAML, watches its pod through its phases, follows a log, sees it complete and deletes it', async () => {
    await writeFile(
      path.join(dir, 'hello.yaml'),
      `apiVersion: batch/v1
kind: Job
metadata:
  name: hello
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      initContainers:
        - name: setup
          image: ${DOCKER_TEST_IMAGE}
          command: ["sh", "-c", "echo setting up"]
      containers:
        - name: main
          image: ${DOCKER_TEST_IMAGE}
          command: ["sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 1; done; echo oops >&2"]
`,
    );
    const watchesBefore = double.requests.filter((r) => r.query.watch === 'true' && r.path.endsWith('/pods')).length;
    const watch = kubectlProcess(['get', 'pods', '--watch', '-o', 'jsonpath={.metadata.name} {.status.phase}{"\\n"}']);
    await until(
      'kubectl watches pods',
      () =>
        double.requests.filter((r) => r.query.watch === 'true' && r.path === `/api/v1/namespaces/${NS}/pods`).length >
        watchesBefore,
    );

    const created = await kubectl(['apply', '-f', path.join(dir, 'hello.yaml')]);
    expect(created).toMatchObject({ code: 0, stdout: 'job.batch/hello created\n' });

    const pod = await until('the main container runs', () => {
      const p = podsOf('hello')[0];
      return containerStatus(p, 'main')?.state?.running ? p : undefined;
    });
    const logs = kubectlProcess(['logs', '-f', pod.metadata.name, '-c', 'main']);
    await until('kubectl logs shows the first line', () => logs.out.stdout.includes('line 1\n'), 20_000);
    // The line came while the container still ran: the log is followed live, not read after the fact.
    expect(containerStatus(podsOf('hello')[0], 'main').state.running).toBeDefined();
    const followed = await logs.done;
    expect(followed.code).toBe(0);
    expect(followed.stdout).toBe('line 1\nline 2\nline 3\nline 4\noops\n');

    const complete = await until('kubectl shows the Job complete', async () => {
      const got = await kubectl(['get', 'job', 'hello', '-o', 'json']);
      const parsed = got.code === 0 ? JSON.parse(got.stdout) : undefined;
      return hasCondition(parsed, 'Complete') ? parsed : undefined;
    });
    expect(complete.status).toMatchObject({ succeeded: 1, ready: 0, terminating: 0, uncountedTerminatedPods: {} });
    expect(complete.status.completionTime).toEqual(expect.any(String));
    expect(complete.status.conditions.map((c: any) => [c.type, c.status, c.reason])).toEqual([
      ['SuccessCriteriaMet', 'True', 'CompletionsReached'],
      ['Complete', 'True', 'CompletionsReached'],
    ]);

    await until('the watch saw the pod succeed', () => watch.out.stdout.includes(`${pod.metadata.name} Succeeded`));
    watch.child.kill();
    const phases = watch.out.stdout
      .split('\n')
      .filter((line) => line.startsWith(pod.metadata.name))
      .map((line) => line.split(' ')[1])
      .filter((phase, i, all) => phase !== all[i - 1]);
    expect(phases).toEqual(['Pending', 'Running', 'Succeeded']);

    const deleted = await kubectl(['delete', 'job', 'hello', '--cascade=background']);
    expect(deleted).toMatchObject({ code: 0, stdout: 'job.batch "hello" deleted\n' });
    await until('the pod is gone', () => podsOf('hello').length === 0);
    await until('its containers are gone', async () => (await double.containers()).length === 0, 20_000);
    expect((await kubectl(['get', 'pods', '-o', 'name'])).stdout).toBe('');
  });

  it('answers kubectl auth can-i through SelfSubjectAccessReview', async () => {
    expect(await kubectl(['auth', 'can-i', 'create', 'jobs'])).toMatchObject({ code: 0, stdout: 'yes\n' });
    expect(await kubectl(['auth', 'can-i', 'create', 'jobs'], executorConfig)).toMatchObject({
      code: 1,
      stdout: 'no\n',
    });
    expect(await kubectl(['auth', 'can-i', 'watch', 'pods'], executorConfig)).toMatchObject({
      code: 0,
      stdout: 'yes\n',
    });
    expect(await kubectl(['auth', 'can-i', 'get', 'pods', '--subresource=log'], executorConfig)).toMatchObject({
      code: 0,
      stdout: 'yes\n',
    });
    const reviews = double.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/selfsubjectaccessreviews'));
    expect(reviews.map((r) => r.user)).toEqual(['admin', 'executor', 'executor', 'executor']);
  });

  it('rejects an invalid Job with 422, and kubectl shows why', async () => {
    await writeFile(
      path.join(dir, 'bad.yaml'),
      `apiVersion: batch/v1
kind: Job
metadata:
  name: bad
spec:
  template:
    spec:
      restartPolicy: Always
      containers:
        - name: main
          image: ${DOCKER_TEST_IMAGE}
`,
    );
    const result = await kubectl(['create', '-f', path.join(dir, 'bad.yaml')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(
      'The Job "bad" is invalid: spec.template.spec.restartPolicy: Unsupported value: "Always": supported values: "OnFailure", "Never"',
    );
    expect(double.objects('jobs', NS).map((j) => j.metadata.name)).not.toContain('bad');
  });
});

describe.concurrent('the API over HTTP', () => {
  it('answers errors with Status bodies', async () => {
    expect((await api('GET', `/apis/batch/v1/namespaces/${NS}/jobs/nope`)).json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'jobs.batch "nope" not found',
      reason: 'NotFound',
      details: { name: 'nope', group: 'batch', kind: 'jobs' },
      code: 404,
    });
    expect((await api('GET', `/api/v1/namespaces/${NS}/pods/nope`)).json).toMatchObject({
      message: 'pods "nope" not found',
      details: { name: 'nope', group: '', kind: 'pods' },
      code: 404,
    });
    expect(
      (
        await api(
          'POST',
          '/apis/batch/v1/namespaces/elsewhere/jobs',
          job('j1', { containers: [{ name: 'c', image: 'x:1' }] }),
        )
      ).json,
    ).toMatchObject({
      message: 'namespaces "elsewhere" not found',
      reason: 'NotFound',
      code: 404,
    });

    const suspended = job('twice', { containers: [{ name: 'c', image: DOCKER_TEST_IMAGE }] }, { suspend: true });
    expect((await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, suspended)).status).toBe(201);
    const again = await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, suspended);
    expect(again.status).toBe(409);
    expect(again.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: 'jobs.batch "twice" already exists',
      reason: 'AlreadyExists',
      details: { name: 'twice', group: 'batch', kind: 'jobs' },
      code: 409,
    });

    const invalid = await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'j-invalid' },
      spec: {
        template: {
          spec: {
            containers: [
              { name: 'main', image: 'x:1', volumeMounts: [{ name: 'cache', mountPath: '/cache' }] },
              { name: 'main', image: 'x:1' },
            ],
          },
        },
      },
    });
    expect(invalid.status).toBe(422);
    expect(invalid.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message:
        'Job.batch "j-invalid" is invalid: [spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never", spec.template.spec.containers[0].volumeMounts[0].name: Not found: "cache", spec.template.spec.containers[1].name: Duplicate value: "main"]',
      reason: 'Invalid',
      details: {
        name: 'j-invalid',
        group: 'batch',
        kind: 'Job',
        causes: [
          {
            reason: 'FieldValueRequired',
            message: 'Required value: valid values: "OnFailure", "Never"',
            field: 'spec.template.spec.restartPolicy',
          },
          {
            reason: 'FieldValueNotFound',
            message: 'Not found: "cache"',
            field: 'spec.template.spec.containers[0].volumeMounts[0].name',
          },
          {
            reason: 'FieldValueDuplicate',
            message: 'Duplicate value: "main"',
            field: 'spec.template.spec.containers[1].name',
          },
        ],
      },
      code: 422,
    });
    const longName = 'x'.repeat(64);
    expect(
      (
        await api(
          'POST',
          `/apis/batch/v1/namespaces/${NS}/jobs`,
          job(longName, { containers: [{ name: 'c', image: 'x:1' }] }),
        )
      ).json,
    ).toMatchObject({
      code: 422,
      details: {
        causes: expect.arrayContaining([
          expect.objectContaining({
            field: 'spec.template.labels',
            message: `Invalid value: "${longName}": must be no more than 63 characters`,
          }),
        ]),
      },
    });

    const forbidden = await api(
      'POST',
      `/apis/batch/v1/namespaces/${NS}/jobs`,
      job('nope', { containers: [{ name: 'c', image: 'x:1' }] }),
      double.executorToken,
    );
    expect(forbidden.status).toBe(403);
    expect(forbidden.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message: `jobs.batch is forbidden: User "system:serviceaccount:${NS}:executor" cannot create resource "jobs" in API group "batch" in the namespace "${NS}"`,
      reason: 'Forbidden',
      details: { group: 'batch', kind: 'jobs' },
      code: 403,
    });
    expect(
      (await api('DELETE', `/api/v1/namespaces/${NS}/secrets/s`, undefined, double.executorToken)).json,
    ).toMatchObject({
      message: `secrets "s" is forbidden: User "system:serviceaccount:${NS}:executor" cannot delete resource "secrets" in API group "" in the namespace "${NS}"`,
      code: 403,
    });
    expect(await api('GET', '/api', undefined, 'wrong')).toMatchObject({
      status: 401,
      json: {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: 'Unauthorized',
        reason: 'Unauthorized',
        code: 401,
      },
    });

    const background = await api('DELETE', `/apis/batch/v1/namespaces/${NS}/jobs/twice?propagationPolicy=Background`);
    expect(background.json).toEqual({
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: { name: 'twice', group: 'batch', kind: 'jobs', uid: expect.any(String) },
    });
  });

  it('ends a watch from a resourceVersion the history no longer holds with an ERROR 410 event', async () => {
    const list = await api('GET', `/api/v1/namespaces/${NS}/pods`);
    expect(list.json).toMatchObject({
      kind: 'PodList',
      apiVersion: 'v1',
      metadata: { resourceVersion: expect.any(String) },
    });

    const tooOld = await watchEvents(`/api/v1/namespaces/${NS}/pods?watch=true&resourceVersion=1`);
    expect(tooOld.status).toBe(200);
    expect(tooOld.events).toEqual([
      {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: expect.stringMatching(/^too old resource version: 1 \(\d+\)$/),
          reason: 'Expired',
          code: 410,
        },
      },
    ]);

    // The fault: a watch from a current resourceVersion, expired all the same.
    double.faults.expireNextWatches(1);
    const expired = await watchEvents(
      `/api/v1/namespaces/${NS}/pods?watch=true&resourceVersion=${list.json!.metadata.resourceVersion}`,
    );
    expect(expired.events.map((e) => [e.type, e.object.code])).toEqual([['ERROR', 410]]);

    // A shrunken history: a few changes push an old resourceVersion out of it.
    const small = await startKubeDouble({ namespaces: [NS], watchHistorySize: 3 });
    try {
      const rv = (await fetch(`${small.url}/api/v1/namespaces/${NS}/secrets`, {
        headers: { Authorization: `Bearer ${small.adminToken}` },
      }).then((r) => r.json())) as any;
      const post = (name: string) =>
        fetch(`${small.url}/api/v1/namespaces/${NS}/secrets`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${small.adminToken}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ metadata: { name }, stringData: { k: name } }),
        });
      const first = (await (await post('s1')).json()) as any;
      for (const name of ['s2', 's3', 's4']) await post(name);
      const from = (v: string) =>
        fetch(`${small.url}/api/v1/namespaces/${NS}/secrets?watch=true&timeoutSeconds=1&resourceVersion=${v}`, {
          headers: { Authorization: `Bearer ${small.adminToken}` },
        }).then(async (r) =>
          (await r.text())
            .trim()
            .split('\n')
            .map((l) => JSON.parse(l)),
        );
      expect((await from(rv.metadata.resourceVersion)).map((e: any) => [e.type, e.object.code])).toEqual([
        ['ERROR', 410],
      ]);
      const replay = await from(first.metadata.resourceVersion);
      expect(replay.map((e: any) => [e.type, e.object.metadata.name])).toEqual([
        ['ADDED', 's2'],
        ['ADDED', 's3'],
        ['ADDED', 's4'],
      ]);
      expect(replay[0].object.data).toEqual({ k: Buffer.from('s2').toString('base64') });
      expect(replay[0].object.stringData).toBeUndefined();
    } finally {
      await small.close();
    }
  });

  it('reports a container killed for its memory limit as OOMKilled, and the Job as failed', async () => {
    const body = job('oom', {
      containers: [
        {
          name: 'hog',
          image: DOCKER_TEST_IMAGE,
          command: ['sh', '-c', 'tail /dev/zero'],
          resources: { limits: { memory: '16Mi' } },
        },
      ],
    });
    expect((await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, body)).status).toBe(201);
    const pod = await until('the pod fails', () => podsOf('oom').find((p) => p.status.phase === 'Failed'), 30_000);
    expect(containerStatus(pod, 'hog').state.terminated).toMatchObject({ exitCode: 137, reason: 'OOMKilled' });
    const failed = await until('the Job fails', () =>
      double.objects('jobs', NS).find((j) => j.metadata.name === 'oom' && hasCondition(j, 'Failed')),
    );
    expect(failed.status.conditions.map((c: any) => [c.type, c.reason, c.message])).toEqual([
      ['FailureTarget', 'BackoffLimitExceeded', 'Job has reached the specified backoff limit'],
      ['Failed', 'BackoffLimitExceeded', 'Job has reached the specified backoff limit'],
    ]);
    expect(failed.status).toMatchObject({ failed: 1, ready: 0, terminating: 0 });
    expect(failed.status.completionTime).toBeUndefined();
  });

  it('fails a pod that outlives its activeDeadlineSeconds with DeadlineExceeded', async () => {
    const body = job('slow', {
      activeDeadlineSeconds: 2,
      containers: [{ name: 'sleeper', image: DOCKER_TEST_IMAGE, command: ['sleep', '60'] }],
    });
    expect((await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, body)).status).toBe(201);
    const pod = await until('the pod fails', () => podsOf('slow').find((p) => p.status.phase === 'Failed'), 30_000);
    expect(pod.status).toMatchObject({
      reason: 'DeadlineExceeded',
      message: 'Pod was active on the node longer than the specified deadline',
    });
    // Killed if it had started by then (SIGKILL after a grace period of 0); never started otherwise.
    await until('the container no longer runs', () => !containerStatus(podsOf('slow')[0], 'sleeper')?.state?.running);
    const sleeper = containerStatus(podsOf('slow')[0], 'sleeper').state;
    if (sleeper.terminated) expect(sleeper.terminated).toMatchObject({ exitCode: 137, reason: 'Error' });
  });

  it('evicts a pod whose emptyDir outgrows its sizeLimit', async () => {
    const body = job('hoarder', {
      volumes: [{ name: 'scratch', emptyDir: { sizeLimit: '1Mi' } }],
      containers: [
        {
          name: 'writer',
          image: DOCKER_TEST_IMAGE,
          command: ['sh', '-c', 'dd if=/dev/zero of=/scratch/big bs=1M count=4 && sleep 60'],
          volumeMounts: [{ name: 'scratch', mountPath: '/scratch' }],
        },
      ],
    });
    expect((await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, body)).status).toBe(201);
    const pod = await until(
      'the pod is evicted',
      () => podsOf('hoarder').find((p) => p.status.reason === 'Evicted'),
      30_000,
    );
    expect(pod.status).toMatchObject({
      phase: 'Failed',
      message: 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".',
    });
    expect(pod.status.conditions).toContainEqual(
      expect.objectContaining({ type: 'DisruptionTarget', status: 'True', reason: 'TerminationByKubelet' }),
    );
    await until('the writer was killed', () => containerStatus(podsOf('hoarder')[0], 'writer')?.state?.terminated);
  });

  it('leaves a pod that fits no node Pending and Unschedulable, with no log to give', async () => {
    const body = job('picky', { nodeSelector: { pool: 'gpu' }, containers: [{ name: 'c', image: DOCKER_TEST_IMAGE }] });
    expect((await api('POST', `/apis/batch/v1/namespaces/${NS}/jobs`, body)).status).toBe(201);
    const pod = await until('the pod is marked unschedulable', () =>
      podsOf('picky').find((p) => (p.status.conditions ?? []).some((c: any) => c.type === 'PodScheduled')),
    );
    expect(pod.status.phase).toBe('Pending');
    expect(pod.spec.nodeName).toBeUndefined();
    expect(pod.status.conditions).toEqual([
      {
        type: 'PodScheduled',
        status: 'False',
        lastProbeTime: null,
        lastTransitionTime: expect.any(String),
        reason: 'Unschedulable',
        message:
          "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
      },
    ]);
    const log = await api('GET', `/api/v1/namespaces/${NS}/pods/${pod.metadata.name}/log?container=c`);
    expect(log).toMatchObject({ status: 204, text: '' });
  });

  it('collects a Secret whose owner Job is deleted', async () => {
    const created = await api(
      'POST',
      `/apis/batch/v1/namespaces/${NS}/jobs`,
      job('owner', { containers: [{ name: 'c', image: DOCKER_TEST_IMAGE }] }, { suspend: true }),
    );
    const owner = created.json!;
    const secret = await api('POST', `/api/v1/namespaces/${NS}/secrets`, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        name: 'owned',
        ownerReferences: [
          { apiVersion: 'batch/v1', kind: 'Job', name: 'owner', uid: owner.metadata.uid, blockOwnerDeletion: true },
        ],
      },
      stringData: { token: 'abc' },
    });
    expect(secret.status).toBe(201);
    expect(secret.json).toMatchObject({ type: 'Opaque', data: { token: 'YWJj' } });
    expect(secret.json!.stringData).toBeUndefined();
    // Suspended: the Job has no pod until it is resumed.
    expect(podsOf('owner')).toEqual([]);
    await api('DELETE', `/apis/batch/v1/namespaces/${NS}/jobs/owner`, {
      kind: 'DeleteOptions',
      apiVersion: 'v1',
      propagationPolicy: 'Background',
    });
    await until(
      'the Secret is collected',
      () => !double.objects('secrets', NS).some((s) => s.metadata.name === 'owned'),
    );
  });
});
