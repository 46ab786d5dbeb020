import { describe, it, expect } from 'vitest';
import { describeIssues, formatPath, parseJobSpec, parseSpecText, type FieldIssue } from '../../src/core/jobSpec.js';

const minimal = { queue: 'default', steps: [{ run: 'echo hi' }] };

function issuesFor(input: unknown): FieldIssue[] {
  const result = parseJobSpec(input);
  if (result.ok)
    throw new Error(`expected ${JSON.stringify(input)} to be rejected, got ${JSON.stringify(result.value)}`);
  return result.issues;
}

/** The issue reported for `field`; fails when another field (or none) is named. */
function issueAt(input: unknown, field: string): FieldIssue {
  const issues = issuesFor(input);
  expect(issues.map((i) => i.field)).toContain(field);
  const issue = issues.find((i) => i.field === field)!;
  expect(issue.message.trim().length).toBeGreaterThan(0);
  return issue;
}

function valid(input: unknown) {
  const result = parseJobSpec(input);
  if (!result.ok) throw new Error(`expected a valid spec, got:\n${describeIssues(result.issues)}`);
  return result.value;
}

describe('parseJobSpec: valid specs', () => {
  it('applies defaults to a minimal spec', () => {
    const spec = valid(minimal);
    expect(spec.queue).toBe('default');
    expect(spec.namespace).toBeUndefined(); // the server sets the submitter's own
    expect(spec.maxAttempts).toBe(3);
    expect(spec.steps).toEqual([{ key: 'step-1', run: 'echo hi' }]);
    expect(spec.repository).toBeUndefined();
    expect(spec.files).toBeUndefined();
  });

  it('numbers unnamed steps by position and keeps explicit keys', () => {
    const spec = valid({ queue: 'q', steps: [{ run: 'a' }, { key: 'build', run: 'b' }, { run: 'c' }] });
    expect(spec.steps.map((s) => s.key)).toEqual(['step-1', 'build', 'step-3']);
  });

  it('defaults the repository to HEAD, shallow, without tags', () => {
    const spec = valid({ ...minimal, repository: { url: 'https://github.com/example/repo.git' } });
    expect(spec.repository).toEqual({
      url: 'https://github.com/example/repo.git',
      commit: 'HEAD',
      shallow: true,
      fetchTags: false,
    });
  });

  it("takes repository credentials from the job's secrets, each for its transport", () => {
    const https = valid({
      ...minimal,
      secrets: ['GIT_TOKEN'],
      repository: { url: 'https://h/r.git', username: 'deploy', passwordSecret: 'GIT_TOKEN' },
    });
    expect(https.repository).toMatchObject({ username: 'deploy', passwordSecret: 'GIT_TOKEN' });
    const ssh = valid({
      ...minimal,
      secrets: ['DEPLOY_KEY'],
      repository: {
        url: 'ssh://git@h:2222/r.git',
        sshKeySecret: 'DEPLOY_KEY',
        knownHosts: '[h]:2222 ssh-ed25519 AAAA',
      },
    });
    expect(ssh.repository).toMatchObject({ sshKeySecret: 'DEPLOY_KEY' });
  });

  it('accepts scp-style git URLs and explicit repository options', () => {
    const spec = valid({
      ...minimal,
      repository: {
        url: 'git@github.com:example/repo.git',
        commit: 'refs/heads/main',
        shallow: false,
        fetchTags: true,
        dir: 'src',
      },
    });
    expect(spec.repository).toMatchObject({ commit: 'refs/heads/main', shallow: false, fetchTags: true, dir: 'src' });
  });

  it('converts durations to milliseconds', () => {
    const spec = valid({
      ...minimal,
      maxRuntime: '1h30m',
      steps: [
        { run: 'a', timeout: '90s' },
        { run: 'b', timeout: 45 },
      ],
    });
    expect(spec.maxRuntime).toBe(90 * 60_000);
    expect(spec.steps[0].timeout).toBe(90_000);
    expect(spec.steps[1].timeout).toBe(45_000);
  });

  it('converts sizes to bytes (single letters are binary, as in docker)', () => {
    const spec = valid({ ...minimal, resources: { cpus: 1.5, memory: '512M', disk: '2G' } });
    expect(spec.resources).toEqual({ cpus: 1.5, memory: 512 * 2 ** 20, disk: 2 * 2 ** 30 });
  });

  it('stringifies env values and accepts namespaces, files and step dirs', () => {
    const spec = valid({
      queue: 'q',
      namespace: 'org:acme',
      files: { 'config/app.json': '{}', 'run.sh': 'echo' },
      steps: [{ run: 'x', dir: 'sub/dir', env: { COUNT: 3, DEBUG: true, NAME: 'n' } }],
      maxAttempts: 1,
    });
    expect(spec.namespace).toBe('org:acme');
    expect(spec.steps[0].env).toEqual({ COUNT: '3', DEBUG: 'true', NAME: 'n' });
    expect(spec.steps[0].dir).toBe('sub/dir');
    expect(Object.keys(spec.files!)).toEqual(['config/app.json', 'run.sh']);
    expect(spec.maxAttempts).toBe(1);
  });
});

describe('parseSpecText', () => {
  it('parses YAML', () => {
    const text = [
      'queue: build',
      'maxAttempts: 2',
      'steps:',
      '  - key: test',
      '    run: |',
      '      npm ci',
      '      npm test',
      '',
    ].join('\n');
    const parsed = parseSpecText(text);
    expect(parsed.ok).toBe(true);
    const spec = valid(parsed.ok ? parsed.value : undefined);
    expect(spec).toMatchObject({ queue: 'build', maxAttempts: 2, steps: [{ key: 'test', run: 'npm ci\nnpm test\n' }] });
  });

  it('parses JSON', () => {
    const parsed = parseSpecText(JSON.stringify({ queue: 'q', steps: [{ run: 'true', timeout: '5m' }] }));
    expect(parsed.ok).toBe(true);
    const spec = valid(parsed.ok ? parsed.value : undefined);
    expect(spec.steps[0]).toEqual({ key: 'step-1', run: 'true', timeout: 300_000 });
  });

  it('reports invalid YAML on (file) with the position', () => {
    const parsed = parseSpecText('queue: [\nsteps: 1\n');
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    expect(parsed.issues).toHaveLength(1);
    expect(parsed.issues[0].field).toBe('(file)');
    expect(parsed.issues[0].message).toMatch(/not valid YAML or JSON/);
    expect(parsed.issues[0].message).toMatch(/line \d+/);
  });

  it('reports invalid JSON', () => {
    const parsed = parseSpecText('{"queue": "q",, }');
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.issues[0].field).toBe('(file)');
  });
});

describe('parseJobSpec: invalid specs name the field', () => {
  const cases: { name: string; input: unknown; field: string; message?: RegExp }[] = [
    { name: 'spec is not an object', input: 'queue: q', field: '(root)', message: /object/ },
    { name: 'spec is null', input: null, field: '(root)', message: /object/ },
    { name: 'spec is an array', input: [minimal], field: '(root)', message: /object/ },
    { name: 'steps missing', input: { queue: 'q' }, field: 'steps', message: /array/ },
    { name: 'queue missing', input: { steps: [{ run: 'x' }] }, field: 'queue' },
    {
      name: 'queue with a space',
      input: { ...minimal, queue: 'my queue' },
      field: 'queue',
      message: /letters, digits/,
    },
    { name: 'empty run', input: { queue: 'q', steps: [{ run: '' }] }, field: 'steps[0].run', message: /non-empty/ },
    {
      name: 'run missing in second step',
      input: { queue: 'q', steps: [{ run: 'a' }, { key: 'b' }] },
      field: 'steps[1].run',
    },
    {
      name: 'invalid step key',
      input: { queue: 'q', steps: [{ run: 'a' }, { key: 'has space', run: 'b' }] },
      field: 'steps[1].key',
    },
    {
      name: 'duplicate step keys',
      input: { queue: 'q', steps: [{ key: 'k', run: 'a' }, { run: 'b' }, { key: 'k', run: 'c' }] },
      field: 'steps[2].key',
      message: /duplicates the key of steps\[0\]/,
    },
    {
      name: 'step dir with ..',
      input: { queue: 'q', steps: [{ run: 'a', dir: 'sub/../../etc' }] },
      field: 'steps[0].dir',
      message: /inside the workspace/,
    },
    {
      name: 'absolute step dir',
      input: { queue: 'q', steps: [{ run: 'a', dir: '/etc' }] },
      field: 'steps[0].dir',
      message: /relative path/,
    },
    {
      name: 'repository dir with ..',
      input: { ...minimal, repository: { url: 'https://h/r.git', dir: '../x' } },
      field: 'repository.dir',
    },
    {
      name: 'ext:: transport',
      input: { ...minimal, repository: { url: 'ext::sh -c touch% /tmp/pwned' } },
      field: 'repository.url',
      message: /git URL/,
    },
    {
      name: 'url with whitespace',
      input: { ...minimal, repository: { url: 'https://host/repo --upload-pack=x' } },
      field: 'repository.url',
    },
    {
      name: 'commit that is an option',
      input: { ...minimal, repository: { url: 'https://h/r.git', commit: '--upload-pack=touch /tmp/x' } },
      field: 'repository.commit',
      message: /not starting with "-"/,
    },
    {
      name: 'sparse checkout option',
      input: { ...minimal, repository: { url: 'https://h/r.git', sparseCheckout: ['--stdin'] } },
      field: 'repository.sparseCheckout[0]',
    },
    {
      name: 'typo at the top level',
      input: { queue: 'q', stpes: [{ run: 'a' }], steps: [{ run: 'a' }] },
      field: 'stpes',
      message: /unknown field/,
    },
    {
      name: 'typo in a step',
      input: { queue: 'q', steps: [{ run: 'a', tiemout: '5m' }] },
      field: 'steps[0].tiemout',
      message: /unknown field/,
    },
    {
      name: 'typo in the repository',
      input: { ...minimal, repository: { url: 'https://h/r.git', branch: 'main' } },
      field: 'repository.branch',
      message: /unknown field/,
    },
    { name: 'maxAttempts 0', input: { ...minimal, maxAttempts: 0 }, field: 'maxAttempts' },
    { name: 'maxAttempts 1.5', input: { ...minimal, maxAttempts: 1.5 }, field: 'maxAttempts', message: /whole number/ },
    { name: 'maxAttempts 11', input: { ...minimal, maxAttempts: 11 }, field: 'maxAttempts' },
    {
      name: 'step timeout "soon"',
      input: { queue: 'q', steps: [{ run: 'a', timeout: 'soon' }] },
      field: 'steps[0].timeout',
      message: /duration/,
    },
    {
      name: 'step timeout beyond what a timer can wait',
      input: { queue: 'q', steps: [{ run: 'a', timeout: '30d' }] },
      field: 'steps[0].timeout',
      message: /at most 7 days/,
    },
    {
      name: 'maxRuntime beyond a week',
      input: { queue: 'q', steps: [], maxRuntime: '200h' },
      field: 'maxRuntime',
      message: /at most 7 days/,
    },
    {
      name: 'maxRuntime 0',
      input: { ...minimal, maxRuntime: '0s' },
      field: 'maxRuntime',
      message: /positive duration/,
    },
    {
      name: 'memory "lots"',
      input: { ...minimal, resources: { memory: 'lots' } },
      field: 'resources.memory',
      message: /size/,
    },
    {
      name: 'negative cpus',
      input: { ...minimal, resources: { cpus: -1 } },
      field: 'resources.cpus',
      message: /positive/,
    },
    {
      name: 'namespace "bob"',
      input: { ...minimal, namespace: 'bob' },
      field: 'namespace',
      message: /"global", "user:NAME" or "org:NAME"/,
    },
    { name: 'secret name "1X"', input: { ...minimal, secrets: ['1X'] }, field: 'secrets[0]', message: /secret name/ },
    {
      name: 'a secret named PATH',
      input: { ...minimal, secrets: ['PATH'] },
      field: 'secrets[0]',
      message: /executor sets for every step/,
    },
    {
      name: 'a secret named DOCKHAND_JOB_ID',
      input: { ...minimal, secrets: ['DOCKHAND_JOB_ID'] },
      field: 'secrets[0]',
      message: /DOCKHAND_\*/,
    },
    {
      name: 'a secret named twice',
      input: { ...minimal, secrets: ['TOKEN', 'TOKEN'] },
      field: 'secrets[1]',
      message: /repeats secrets\[0\]/,
    },
    {
      name: 'a step env that a secret also sets',
      input: { queue: 'q', secrets: ['TOKEN'], steps: [{ run: 'a', env: { TOKEN: 'x' } }] },
      field: 'steps[0].env.TOKEN',
      message: /also a secret/,
    },
    {
      name: 'a password secret the job does not have',
      input: { ...minimal, repository: { url: 'https://h/r.git', passwordSecret: 'GIT_TOKEN' } },
      field: 'repository.passwordSecret',
      message: /not in the job's secrets; add it to secrets/,
    },
    {
      name: 'a password secret for an ssh URL',
      input: { ...minimal, secrets: ['K'], repository: { url: 'git@h:r.git', passwordSecret: 'K' } },
      field: 'repository.passwordSecret',
      message: /https:\/\/ URLs; use sshKeySecret/,
    },
    {
      name: 'a password secret beside credentials in the URL',
      input: { ...minimal, secrets: ['K'], repository: { url: 'https://u:p@h/r.git', passwordSecret: 'K' } },
      field: 'repository.passwordSecret',
      message: /remove them from url/,
    },
    {
      name: 'a username without a password secret',
      input: { ...minimal, repository: { url: 'https://h/r.git', username: 'deploy' } },
      field: 'repository.username',
      message: /only with passwordSecret/,
    },
    {
      name: 'a username with a colon',
      input: { ...minimal, repository: { url: 'https://h/r.git', username: 'a:b' } },
      field: 'repository.username',
    },
    {
      name: 'an SSH key secret for an https URL',
      input: { ...minimal, secrets: ['K'], repository: { url: 'https://h/r.git', sshKeySecret: 'K' } },
      field: 'repository.sshKeySecret',
      message: /ssh:\/\/ or user@host:path URLs; use passwordSecret/,
    },
    {
      name: 'known hosts for an https URL',
      input: { ...minimal, repository: { url: 'https://h/r.git', knownHosts: 'h ssh-ed25519 AAAA' } },
      field: 'repository.knownHosts',
    },
    {
      name: 'too many steps',
      input: { queue: 'q', steps: Array.from({ length: 101 }, () => ({ run: 'x' })) },
      field: 'steps',
      message: /100/,
    },
  ];

  for (const c of cases) {
    it(`${c.name} -> ${c.field}`, () => {
      const issue = issueAt(c.input, c.field);
      if (c.message) expect(issue.message).toMatch(c.message);
    });
  }

  it('reports every problem, not just the first', () => {
    const fields = issuesFor({ queue: 'bad queue', namespace: 'bob', steps: [{ run: '' }] }).map((i) => i.field);
    expect(fields).toEqual(expect.arrayContaining(['queue', 'namespace', 'steps[0].run']));
  });

  it('names all unknown keys of one object', () => {
    const issue = issuesFor({ ...minimal, foo: 1, bar: 2 });
    expect(issue).toHaveLength(1);
    expect(issue[0].field).toBe('foo, bar');
    expect(issue[0].message).toMatch(/unknown fields/);
  });

  it('rejects files larger than the limit in total', () => {
    const big = 'x'.repeat(5 * 1024 * 1024);
    issueAt({ ...minimal, files: { a: big, b: big } }, 'files');
  });

  // Record keys are validated by zod 4 as `invalid_key` issues whose own message is the generic
  // "Invalid key in record"; the schema's explanation is in the nested issues and must reach the user.
  it('files path escaping with .. -> files.<path>, explaining why', () => {
    const issue = issueAt({ ...minimal, files: { '../etc/passwd': 'x' } }, 'files.../etc/passwd');
    expect(issue.message).toMatch(/inside the workspace/);
  });

  it('absolute files path -> files.<path>, explaining why', () => {
    const issue = issueAt({ ...minimal, files: { '/etc/passwd': 'x' } }, 'files./etc/passwd');
    expect(issue.message).toMatch(/relative path/);
  });

  // isSafeRelativePath accepts "." and "dir/" (right for a working directory), but as a file name they point at a
  // directory: the spec passes validation and writing the file fails on the executor instead.
  it('files keys that name a directory, not a file, are refused', () => {
    for (const key of ['.', './', 'dir/', 'a/./']) {
      const issue = issueAt({ ...minimal, files: { [key]: 'x' } }, `files.${key}`);
      expect(issue.message).not.toBe('Invalid key in record');
    }
  });

  it('env name with "=" -> steps[0].env.<name>, explaining why', () => {
    const issue = issueAt({ queue: 'q', steps: [{ run: 'a', env: { 'A=B': 'x' } }] }, 'steps[0].env.A=B');
    expect(issue.message).toMatch(/environment variable name/);
  });
});

describe('formatPath and describeIssues', () => {
  it('formats paths the way users write them', () => {
    expect(formatPath([])).toBe('(root)');
    expect(formatPath(['queue'])).toBe('queue');
    expect(formatPath(['steps', 0, 'env', 'HOME'])).toBe('steps[0].env.HOME');
    expect(formatPath(['repository', 'sparseCheckout', 2])).toBe('repository.sparseCheckout[2]');
  });

  it('lists one issue per line', () => {
    expect(
      describeIssues([
        { field: 'queue', message: 'bad' },
        { field: 'steps', message: 'missing' },
      ]),
    ).toBe('  queue: bad\n  steps: missing');
  });
});
