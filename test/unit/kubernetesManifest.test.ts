// The exact objects a job becomes on the kubernetes runtime (golden files), their validity against the Kubernetes
// API's schema, where the job's secrets go (never into the Job's spec), and the settings' checks.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/core/envConfig.js';
import { parseJobSpec, type JobSpecInput } from '../../src/core/jobSpec.js';
import { jobView } from '../../src/executor/jobRunner.js';
import {
  claimManifest,
  jobManifest,
  jobName,
  pullSecretManifest,
  secretManifest,
  setupScript,
  type ManifestContext,
} from '../../src/executor/runtimes/kubernetes/jobManifest.js';
import { kubernetesOptions, parseQuantity } from '../../src/executor/runtimes/kubernetes/options.js';
import { validateKubernetesObject } from '../support/kubernetes/validate.js';

function context(input: Omit<JobSpecInput, 'queue'>, env: NodeJS.ProcessEnv = {}): ManifestContext {
  const parsed = parseJobSpec({ queue: 'builds', ...input });
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const job = jobView(
    {
      id: 42,
      attempt: 2,
      token: 'dhj_not-for-the-runtime',
      queue: 'builds',
      namespace: 'user:ada',
      spec: parsed.value,
      secrets: { API_KEY: 'sup3r-s3cret', GIT_TOKEN: 'git-pa55' },
      dockerAuthConfig: { auths: { 'registry.example.com': { auth: Buffer.from('ci:regi5try').toString('base64') } } },
    },
    { cpus: 1.5, memoryBytes: 512 * 2 ** 20, diskBytes: 2 * 2 ** 30 },
    20 * 60_000,
  );
  return {
    job,
    options: kubernetesOptions({ EXECUTOR_KUBERNETES_NAMESPACE: 'ci', ...env }),
    executorName: 'exec-a',
    name: jobName('exec-a', 42, 2, 'beef'),
    nonce: '@@dockhand:0123456789abcdef',
    deadlineSeconds: 1200,
  };
}

const sample = {
  repository: {
    url: 'https://git.example.com/team/app.git',
    commit: '0123456789abcdef0123456789abcdef01234567',
    username: 'deploy',
    passwordSecret: 'GIT_TOKEN',
  },
  secrets: ['API_KEY', 'GIT_TOKEN'],
  files: { 'ci/settings.json': '{"fast":true}' },
  steps: [
    { key: 'build', image: 'node:22', dir: 'app', env: { MODE: 'release' }, run: 'npm ci\nnpm run build' },
    { key: 'test', image: 'node:22', user: '1000:1000', run: 'npm test' },
  ],
};

const owner = { metadata: { name: 'dockhand-42-2-x', uid: '5f0c1a2b-0000-4000-8000-000000000042' } };

describe('kubernetes manifests', () => {
  it('make the golden Job, Secrets and claim for a sample job', async () => {
    const ctx = context(sample, {
      EXECUTOR_KUBERNETES_NODE_SELECTOR: 'pool=ci',
      EXECUTOR_KUBERNETES_NODE_TOLERATIONS:
        '[{"key":"dedicated","operator":"Equal","value":"ci","effect":"NoSchedule"}]',
      EXECUTOR_KUBERNETES_RUN_AS_USER: '1000',
      EXECUTOR_KUBERNETES_FS_GROUP: '1000',
      EXECUTOR_KUBERNETES_RESOURCE_REQUEST_CPU: '500m',
      EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE: 'pvc',
      EXECUTOR_KUBERNETES_JOB_STEP_IMAGE: 'alpine/git:2.47.2',
    });
    await expect(`${JSON.stringify(jobManifest(ctx), null, 2)}\n`).toMatchFileSnapshot('golden/kubernetesJob.json');
    const objects = {
      secret: secretManifest(ctx, owner),
      pullSecret: pullSecretManifest(ctx, owner),
      claim: claimManifest(ctx, owner),
    };
    await expect(`${JSON.stringify(objects, null, 2)}\n`).toMatchFileSnapshot('golden/kubernetesJobObjects.json');
  });

  it('validate against the Kubernetes API schema, in every volume mode and with every scheduling setting', () => {
    for (const env of [
      {},
      {
        EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE: 'pvc',
        EXECUTOR_KUBERNETES_STORAGE_CLASS: 'fast-ssd',
        EXECUTOR_KUBERNETES_NODE_NAME: 'node-a',
        EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS:
          '[{"key":"pool","operator":"In","values":["ci"]}]',
        EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_FIELDS:
          '[{"key":"metadata.name","operator":"NotIn","values":["node-b"]}]',
        EXECUTOR_KUBERNETES_POD_ANTI_AFFINITY:
          '[{"labelSelector":{"matchLabels":{"dockhand.dev/role":"job"}},"topologyKey":"kubernetes.io/hostname"}]',
        EXECUTOR_KUBERNETES_IMAGE_PULL_SECRETS: 'regcred',
        EXECUTOR_KUBERNETES_JOB_ANNOTATIONS: '{"team":"ci"}',
        EXECUTOR_KUBERNETES_JOB_POD_ANNOTATIONS: '{"example.com/cost-centre":"42"}',
        EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES:
          '[{"name":"cache","persistentVolumeClaim":{"claimName":"ci-cache"}}]',
        EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUME_MOUNTS: '[{"name":"cache","mountPath":"/cache"}]',
        EXECUTOR_KUBERNETES_KEEP_JOBS: 'true',
      },
    ]) {
      const ctx = context(sample, env);
      for (const object of [
        jobManifest(ctx),
        secretManifest(ctx, owner),
        pullSecretManifest(ctx, owner),
        claimManifest(ctx, owner),
      ]) {
        expect(validateKubernetesObject(object), JSON.stringify(object)).toEqual([]);
      }
    }
  });

  it("keep the job's secrets, credentials and files out of the Job's spec", () => {
    const ctx = context({
      ...sample,
      repository: { url: 'https://deploy:url-pa55word@git.example.com/team/app.git' },
      files: { 'secret.txt': 'file-content-in-the-secret' },
    });
    const job = JSON.stringify(jobManifest(ctx));
    for (const secret of ['sup3r-s3cret', 'git-pa55', 'url-pa55word', 'regi5try', 'file-content-in-the-secret'])
      expect(job).not.toContain(secret);
    // The steps name the secrets; the kubelet sets their values from the Secret.
    expect(job).toContain('"secretKeyRef":{"name":"dockhand-42-2-');
    const stored = Object.values(secretManifest(ctx, owner).data!).map((v) => Buffer.from(v, 'base64').toString());
    expect(stored.join('\n')).toContain('url-pa55word');
    expect(stored.join('\n')).toContain('sup3r-s3cret');
  });

  it('name Jobs uniquely per attempt and executor, within the 63 characters of a label', () => {
    expect(jobName('exec-a', 42, 2, 'beef')).toMatch(/^dockhand-42-2-[0-9a-f]{6}beef$/);
    expect(jobName('exec-a', 42, 2, 'beef')).not.toBe(jobName('exec-b', 42, 2, 'beef'));
    expect(jobName('x', 2 ** 52, 10, 'ffff').length).toBeLessThanOrEqual(63);
  });

  it('write the setup script from the checkout commands, taking the URL from the Secret', () => {
    const script = setupScript(context(sample));
    expect(script).toContain('. /dockhand/git.env');
    expect(script).toContain('"$DOCKHAND_REPO_URL"');
    expect(script).not.toContain('git.example.com');
    expect(script).toMatch(/printf '%s begin %s\\n' "\$M" 'setup\.git\.fetch'/);
    expect(script).toContain("echo 'wrote ci/settings.json (13 bytes)'");
  });
});

describe('kubernetes settings', () => {
  const refused = (env: NodeJS.ProcessEnv) => {
    try {
      kubernetesOptions(env);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error(`accepted ${JSON.stringify(env)}`);
  };

  it('are refused at start with the variable and the fix named', () => {
    expect(refused({ EXECUTOR_KUBERNETES_NAMESPACE: 'ci.jobs' })).toMatch(
      /EXECUTOR_KUBERNETES_NAMESPACE must be a namespace name/,
    );
    expect(
      refused({ EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS: '[{"key":"pool","operator":"In"}]' }),
    ).toMatch(/\[0\]\.\[values\]: In needs at least one value/);
    expect(
      refused({
        EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_EXPRESSIONS:
          '[{"key":"cpus","operator":"Gt","values":["many"]}]',
      }),
    ).toMatch(/Gt takes exactly one whole number/);
    expect(refused({ EXECUTOR_KUBERNETES_NODE_TOLERATIONS: '[{"key":"a","operator":"Exists","value":"b"}]' })).toMatch(
      /must be empty with operator Exists/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY: '1Mi' })).toMatch(/at least 16Mi/);
    expect(refused({ EXECUTOR_KUBERNETES_JOB_STEP_IMAGE: 'Alpine/Git latest' })).toMatch(
      /EXECUTOR_KUBERNETES_JOB_STEP_IMAGE must be an image reference/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_NODE_SELECTOR: 'pool' })).toMatch(
      /EXECUTOR_KUBERNETES_NODE_SELECTOR: "pool" must be LABEL=VALUE/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_NODE_TOLERATIONS: '{not json' })).toMatch(
      /EXECUTOR_KUBERNETES_NODE_TOLERATIONS is not valid JSON; expected e\.g\. \[/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_NODE_TOLERATIONS: '[{"operator":"Maybe"}]' })).toMatch(
      /EXECUTOR_KUBERNETES_NODE_TOLERATIONS\[0\]\.\[operator\]/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_POD_AFFINITY: '[{"labelSelector":{}}]' })).toMatch(
      /EXECUTOR_KUBERNETES_POD_AFFINITY\[0\]\.\[topologyKey\]/,
    );
    expect(
      refused({ EXECUTOR_KUBERNETES_NODE_REQUIRED_AFFINITY_MATCH_FIELDS: '[{"key":"pool","operator":"In"}]' }),
    ).toMatch(/only metadata\.name/);
    expect(refused({ EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY: 'lots' })).toMatch(
      /EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY="lots" is not a Kubernetes memory quantity; use e\.g\./,
    );
    expect(
      refused({ EXECUTOR_KUBERNETES_RESOURCE_LIMIT_CPU: '1', EXECUTOR_KUBERNETES_RESOURCE_REQUEST_CPU: '2' }),
    ).toMatch(/REQUEST_CPU is above .*LIMIT_CPU/);
    expect(refused({ EXECUTOR_JOB_MEMORY: '1G', EXECUTOR_KUBERNETES_RESOURCE_LIMIT_MEMORY: '1Gi' })).toMatch(
      /are the same setting on the kubernetes runtime; set only one/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_JOB_VOLUME_TYPE: 'hostPath' })).toMatch(/must be "emptyDir" .* or "pvc"/);
    expect(
      refused({ EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUME_MOUNTS: '[{"name":"cache","mountPath":"/cache"}]' }),
    ).toMatch(/names volume "cache", which EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES does not define/);
    expect(refused({ EXECUTOR_KUBERNETES_ADDITIONAL_JOB_VOLUMES: '[{"name":"cache"}]' })).toMatch(/exactly one source/);
    expect(refused({ EXECUTOR_KUBERNETES_RUN_AS_USER: '-1' })).toMatch(
      /EXECUTOR_KUBERNETES_RUN_AS_USER="-1" must be a whole number/,
    );
    expect(refused({ EXECUTOR_KUBERNETES_SCHEDULE_TIMEOUT: 'soon' })).toMatch(/is not a duration/);
    expect(refused({ EXECUTOR_KUBERNETES_KEEP_JOBS: 'perhaps' })).toMatch(/must be true or false/);
  });

  it('read Kubernetes quantities', () => {
    expect(parseQuantity('500m')).toBe(0.5);
    expect(parseQuantity('2')).toBe(2);
    expect(parseQuantity('512Mi')).toBe(512 * 2 ** 20);
    expect(parseQuantity('1G')).toBe(1e9);
    expect(parseQuantity('1.5Gi')).toBe(1.5 * 2 ** 30);
    expect(parseQuantity('lots')).toBeUndefined();
  });
});
