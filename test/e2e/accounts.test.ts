// Users, organizations, API tokens and executor secrets through the `dockhand` CLI, against a real server and a
// real (shell) executor: the whole flow from the bootstrap admin to jobs that read their secrets.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADMIN_TOKEN,
  CLI,
  OUTPUT_DIR,
  startExecutor,
  startServer,
  tempDir,
  type ExecutorHandle,
  type ServerHandle,
  runCli,
  type CliResult,
} from '../support/processes.js';

/** Every stdout and stderr any command printed: no secret value may appear in any of them. */
const outputs: string[] = [];

/** Runs the CLI, keeping what it printed for the final check. */
async function cli(args: string[], env: NodeJS.ProcessEnv, input = ''): Promise<CliResult> {
  const result = await runCli(args, env, input);
  outputs.push(`$ dockhand ${args.join(' ')}\n${result.stdout}${result.stderr}`);
  return result;
}

/** Expects a zero exit, showing the output when it is not. */
async function ok(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliResult> {
  const result = await cli(args, env, input);
  expect(result.code, `dockhand ${args.join(' ')}:\n${result.stdout}${result.stderr}`).toBe(0);
  return result;
}

/** Expects a failure, with an error message on stderr and nothing on stdout. */
async function fails(args: string[], env: NodeJS.ProcessEnv, input?: string): Promise<CliResult> {
  const result = await cli(args, env, input);
  expect(result.code, `dockhand ${args.join(' ')} should fail:\n${result.stdout}${result.stderr}`).not.toBe(0);
  expect(result.stderr).toMatch(/^dockhand: /);
  return result;
}

// Secret values, each a distinct length so a job can tell which one it got without printing it.
const STDIN_VALUE = 'stdin-secret-1234'; // 17, sent with one trailing newline: stored without it
const TWO_NEWLINES_VALUE = 'two-newlines'; // 12, sent with two trailing newlines: one stays (13)
const FILE_VALUE = 'file-secret-value-xy'; // 20, in a file with a trailing newline: kept (21)
const GLOBAL_SHARED = 'global-shared-value'; // 19
const ALICE_SHARED = 'alice-shared-value-0'; // 20
const ORG_VALUE = 'acme-org-value-77'; // 17
const VALUES = [STDIN_VALUE, TWO_NEWLINES_VALUE, FILE_VALUE, GLOBAL_SHARED, ALICE_SHARED, ORG_VALUE];

describe('users, organizations, tokens and secrets through the CLI', () => {
  let server: ServerHandle;
  let executor: ExecutorHandle;
  let dir: string;
  let base: NodeJS.ProcessEnv;
  let admin: NodeJS.ProcessEnv;
  let alice: NodeJS.ProcessEnv;
  let bob: NodeJS.ProcessEnv;
  let specs = 0;

  const as = (token: string): NodeJS.ProcessEnv => ({ ...base, DOCKHAND_TOKEN: token });

  /** Submits a job on the test queue and follows it; `checks` are shell lines run in one step. */
  function runJob(
    env: NodeJS.ProcessEnv,
    fields: { namespace?: string; secrets: string[] },
    checks: string[],
  ): Promise<CliResult> {
    const file = path.join(dir, `job-${++specs}.yaml`);
    const lines = ['queue: accounts', `secrets: [${fields.secrets.join(', ')}]`];
    if (fields.namespace) lines.push(`namespace: "${fields.namespace}"`);
    lines.push('steps:', '  - key: check', '    run: |', ...checks.map((c) => `      ${c}`));
    writeFileSync(file, `${lines.join('\n')}\n`);
    return cli(['job', 'submit', file, '--follow'], env);
  }

  /** A shell line failing the step unless $NAME has `length` characters (never printing the value). */
  const hasLength = (name: string, length: number): string =>
    `[ "\${#${name}}" -eq ${length} ] || { echo "${name} has \${#${name}} characters, expected ${length}" >&2; exit 1; }`;

  beforeAll(async () => {
    dir = await tempDir('accounts');
    server = await startServer({ name: 'accounts-server' });
    executor = await startExecutor(server.url, { name: 'accounts-exec', queues: ['accounts'] });
    base = { DOCKHAND_URL: server.url, HOME: dir, XDG_CONFIG_HOME: dir };
    admin = as(ADMIN_TOKEN);
  });

  afterAll(async () => {
    // Every command and what it printed, for post-mortems, like the processes' logs.
    mkdirSync(OUTPUT_DIR, { recursive: true });
    writeFileSync(path.join(OUTPUT_DIR, 'accounts-cli.log'), outputs.join('\n'));
    await executor?.stop();
    await server?.stop();
  });

  it('lists the new commands in --help', async () => {
    const help = await ok(['--help'], base);
    for (const command of ['whoami', 'user', 'org', 'token', 'secret']) expect(help.stdout).toContain(command);
    expect((await ok(['user', '--help'], base)).stdout).toMatch(
      /create[\s\S]*list[\s\S]*delete[\s\S]*set-admin[\s\S]*unset-admin/,
    );
    expect((await ok(['org', '--help'], base)).stdout).toMatch(
      /create[\s\S]*list[\s\S]*delete[\s\S]*members[\s\S]*add-member[\s\S]*remove-member/,
    );
    expect((await ok(['token', '--help'], base)).stdout).toMatch(/create[\s\S]*list[\s\S]*revoke/);
    expect((await ok(['secret', '--help'], base)).stdout).toMatch(/set[\s\S]*list[\s\S]*delete[\s\S]*access-log/);
  });

  it('the bootstrap admin creates users and a token for each, printed alone on stdout', async () => {
    const me = await ok(['whoami'], admin);
    expect(me.stdout).toMatch(/^user: +admin$/m);
    expect(me.stdout).toMatch(/^site admin: +yes$/m);

    expect((await ok(['user', 'create', 'alice'], admin)).stdout).toContain('created user alice');
    expect((await ok(['user', 'create', 'bob', '--json'], admin)).stdout).toSatisfy(
      (s: string) => JSON.parse(s).name === 'bob',
    );
    const again = await fails(['user', 'create', 'alice'], admin);
    expect(again.stderr).toContain('alice');

    const created = await ok(['token', 'create', 'alice-laptop', '--user', 'alice'], admin);
    // Alone on stdout, so that TOKEN=$(dockhand token create …) works; the warning goes to stderr.
    expect(created.stdout).toMatch(/^dha_\S+\n$/);
    expect(created.stderr).toContain('shown only this once');
    expect(created.stderr).not.toContain(created.stdout.trim());
    alice = as(created.stdout.trim());
    const forBob = await ok(['token', 'create', 'bob-laptop', '--user', 'bob', '--json'], admin);
    const bobToken = JSON.parse(forBob.stdout) as { token: { name: string; user: string }; secret: string };
    expect(bobToken.token).toMatchObject({ name: 'bob-laptop', user: 'bob' });
    bob = as(bobToken.secret);

    const users = await ok(['user', 'list'], admin);
    expect(users.stdout).toMatch(/^NAME\s+SITE ADMIN\s+ORGS\s+CREATED$/m);
    expect(users.stdout).toMatch(/^admin\s+yes\s/m);
    expect(users.stdout).toMatch(/^alice\s+no\s/m);

    const aliceMe = await ok(['whoami'], alice);
    expect(aliceMe.stdout).toMatch(/^user: +alice$/m);
    expect(aliceMe.stdout).toMatch(/^site admin: +no$/m);
    expect(aliceMe.stdout).toMatch(/^namespaces: .*user:alice/m);

    // Users are for site admins only, and so are tokens for someone else.
    await fails(['user', 'list'], alice);
    await fails(['user', 'create', 'mallory'], alice);
    await fails(['token', 'create', 'sneaky', '--user', 'bob'], alice);
  });

  it('alice creates an organization and adds bob; membership shows in whoami', async () => {
    expect((await ok(['org', 'create', 'acme'], alice)).stdout).toContain('created organization acme');
    expect((await ok(['org', 'add-member', 'acme', 'bob'], alice)).stdout).toContain('added bob to acme');
    const members = await ok(['org', 'members', 'acme'], alice);
    expect(members.stdout).toMatch(/^NAME\s+SITE ADMIN$/m);
    expect(members.stdout).toMatch(/^alice\s+no$/m);
    expect(members.stdout).toMatch(/^bob\s+no$/m);
    const orgs = await ok(['org', 'list'], bob);
    expect(orgs.stdout).toMatch(/^acme\s+2\s/m);

    const bobMe = JSON.parse((await ok(['whoami', '--json'], bob)).stdout) as {
      user: { name: string; siteAdmin: boolean };
      orgs: string[];
      namespaces: string[];
    };
    expect(bobMe.user).toMatchObject({ name: 'bob', siteAdmin: false });
    expect(bobMe.orgs).toEqual(['acme']);
    expect(bobMe.namespaces).toEqual(expect.arrayContaining(['user:bob', 'org:acme']));
    expect((await ok(['whoami'], alice)).stdout).toMatch(/^orgs: +acme$/m);

    // An organization of one's own comes and goes; another's members stay hidden.
    await ok(['org', 'create', 'scratch'], bob);
    await fails(['org', 'members', 'scratch'], alice);
    expect((await ok(['org', 'delete', 'scratch'], bob)).stdout).toContain('deleted organization scratch');
    expect((await ok(['org', 'list', '--json'], bob)).stdout).not.toContain('scratch');
  });

  it('sets secrets from stdin (less exactly one newline) and from a file (as is); listings never show values', async () => {
    const fromStdin = await ok(['secret', 'set', 'STDIN_KEY', '--namespace', 'user:alice'], alice, `${STDIN_VALUE}\n`);
    expect(fromStdin.stdout).toBe('created secret STDIN_KEY in user:alice\n');
    await ok(['secret', 'set', 'TWO_NEWLINES', '--namespace', 'user:alice'], alice, `${TWO_NEWLINES_VALUE}\n\n`);
    const file = path.join(dir, 'value.txt');
    writeFileSync(file, `${FILE_VALUE}\n`);
    await ok(['secret', 'set', 'FILE_KEY', '--namespace', 'user:alice', '--from-file', file], alice);
    // Setting it again updates it.
    expect(
      (await ok(['secret', 'set', 'FILE_KEY', '--namespace', 'user:alice', '--from-file', file], alice)).stdout,
    ).toBe('updated secret FILE_KEY in user:alice\n');

    await ok(['secret', 'set', 'SHARED'], admin, GLOBAL_SHARED); // no newline at all: nothing stripped
    await ok(['secret', 'set', 'SHARED', '--namespace', 'user:alice'], alice, `${ALICE_SHARED}\n`);
    await ok(['secret', 'set', 'ORG_KEY', '--namespace', 'org:acme', '--json'], bob, `${ORG_VALUE}\n`);

    const list = await ok(['secret', 'list'], alice);
    expect(list.stdout).toMatch(/^NAME\s+NAMESPACE\s+UPDATED BY\s+UPDATED$/m);
    expect(list.stdout).toMatch(/^STDIN_KEY\s+user:alice\s+alice\s+\S+/m);
    expect(list.stdout).toMatch(/^FILE_KEY\s+user:alice\s+alice\s/m);
    expect(list.stdout).toMatch(/^SHARED\s+global\s+admin\s/m);
    expect(list.stdout).toMatch(/^SHARED\s+user:alice\s+alice\s/m);
    expect(list.stdout).toMatch(/^ORG_KEY\s+org:acme\s+bob\s/m);
    const json = JSON.parse((await ok(['secret', 'list', '--namespace', 'user:alice', '--json'], alice)).stdout) as {
      name: string;
      namespace: string;
    }[];
    expect(json.map((s) => s.name).sort()).toEqual(['FILE_KEY', 'SHARED', 'STDIN_KEY', 'TWO_NEWLINES']);
    for (const s of json) {
      expect(s.namespace).toBe('user:alice');
      expect(Object.keys(s)).not.toContain('value');
    }
    // Bob sees global and his org's, not alice's own.
    const bobs = await ok(['secret', 'list'], bob);
    expect(bobs.stdout).toContain('ORG_KEY');
    expect(bobs.stdout).not.toContain('STDIN_KEY');
  });

  it('refuses a value too short to redact, an empty stdin, and a namespace one is not in', async () => {
    const short = await fails(['secret', 'set', 'SHORT_KEY', '--namespace', 'user:alice'], alice, 'short\n');
    expect(short.stderr).toContain('at least 8 characters');
    const empty = await fails(['secret', 'set', 'EMPTY_KEY', '--namespace', 'user:alice'], alice, '');
    expect(empty.stderr).toContain('stdin was empty');
    const missingFile = await fails(
      ['secret', 'set', 'NO_FILE', '--namespace', 'user:alice', '--from-file', path.join(dir, 'nope')],
      alice,
    );
    expect(missingFile.stderr).toContain('cannot read');

    const intruder = await fails(
      ['secret', 'set', 'STDIN_KEY', '--namespace', 'user:alice'],
      bob,
      'bob-was-here-123\n',
    );
    expect(intruder.stderr).toMatch(/not that user/);
    await fails(['secret', 'set', 'GLOBAL_KEY'], bob, 'not-an-admin-123\n');
    await fails(['secret', 'delete', 'SHARED'], alice);
    expect((await ok(['secret', 'list', '--json'], alice)).stdout).not.toMatch(/SHORT_KEY|EMPTY_KEY|GLOBAL_KEY/);
  });

  it('jobs get their secrets: stdin and file values exact, own namespace over global, org namespace', async () => {
    const own = await runJob(alice, { secrets: ['STDIN_KEY', 'TWO_NEWLINES', 'FILE_KEY', 'SHARED'] }, [
      hasLength('STDIN_KEY', STDIN_VALUE.length),
      hasLength('TWO_NEWLINES', TWO_NEWLINES_VALUE.length + 1),
      hasLength('FILE_KEY', FILE_VALUE.length + 1),
      hasLength('SHARED', ALICE_SHARED.length), // user:alice overrides global
      'case "$SHARED" in alice-*) ;; *) echo "SHARED is not alice\'s" >&2; exit 1;; esac',
      'echo secrets checked',
    ]);
    expect(own.code, own.stdout + own.stderr).toBe(0);
    expect(own.stdout).toContain('secrets checked');

    // In org:acme, SHARED falls back to the global one: alice's own namespace does not apply there.
    const inOrg = await runJob(alice, { namespace: 'org:acme', secrets: ['ORG_KEY', 'SHARED'] }, [
      hasLength('ORG_KEY', ORG_VALUE.length),
      hasLength('SHARED', GLOBAL_SHARED.length),
    ]);
    expect(inOrg.code, inOrg.stdout + inOrg.stderr).toBe(0);
    const bobs = await runJob(bob, { secrets: ['SHARED'] }, [hasLength('SHARED', GLOBAL_SHARED.length)]);
    expect(bobs.code, bobs.stdout + bobs.stderr).toBe(0);

    // Bob has no STDIN_KEY and may not submit into alice's namespace.
    const missing = await runJob(bob, { secrets: ['STDIN_KEY'] }, ['true']);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain('secrets[0]');
    const intruder = await runJob(bob, { namespace: 'user:alice', secrets: ['STDIN_KEY'] }, ['true']);
    expect(intruder.code).not.toBe(0);

    // Deleting alice's SHARED lets the global one through again.
    expect((await ok(['secret', 'delete', 'SHARED', '--namespace', 'user:alice'], alice)).stdout).toBe(
      'deleted secret SHARED from user:alice\n',
    );
    const fallback = await runJob(alice, { secrets: ['SHARED'] }, [hasLength('SHARED', GLOBAL_SHARED.length)]);
    expect(fallback.code, fallback.stdout + fallback.stderr).toBe(0);
  });

  it("a step that prints a secret does not get the value into the job's log", async () => {
    const printed = await runJob(alice, { secrets: ['STDIN_KEY'] }, [
      'echo "the key is $STDIN_KEY"',
      'printf %s "$STDIN_KEY" | base64',
    ]);
    expect(printed.code, printed.stdout + printed.stderr).toBe(0);
    const id = /submitted job (\d+)/.exec(printed.stderr)![1];
    const logs = await ok(['job', 'logs', id], alice);
    expect(logs.stdout).toContain('the key is ');
    expect(logs.stdout).not.toContain(STDIN_VALUE);
    expect(logs.stdout).not.toContain(Buffer.from(STDIN_VALUE).toString('base64'));
  });

  it('the access log records which job received which secret, for site admins', async () => {
    const jobs = JSON.parse((await ok(['job', 'list', '--namespace', 'org:acme', '--json'], alice)).stdout) as {
      jobs: { id: number }[];
    };
    const orgJob = jobs.jobs[0].id;
    const log = JSON.parse((await ok(['secret', 'access-log', '--job', String(orgJob), '--json'], admin)).stdout) as {
      name: string;
      namespace: string;
      jobId: number;
      attempt: number;
      executorName: string;
    }[];
    expect(log.map((e) => `${e.namespace}/${e.name}`).sort()).toEqual(['global/SHARED', 'org:acme/ORG_KEY']);
    expect(log[0]).toMatchObject({ jobId: orgJob, attempt: 1, executorName: 'accounts-exec' });

    const table = await ok(
      ['secret', 'access-log', '--namespace', 'user:alice', '--name', 'STDIN_KEY', '--limit', '1'],
      admin,
    );
    expect(table.stdout).toMatch(/^ACCESSED\s+NAME\s+NAMESPACE\s+JOB\s+ATTEMPT\s+EXECUTOR$/m);
    expect(table.stdout.trim().split('\n')).toHaveLength(2);
    expect(table.stdout).toMatch(/^\S+ ago\s+STDIN_KEY\s+user:alice\s+\d+\s+1\s+accounts-exec$/m);

    await fails(['secret', 'access-log'], alice);
    expect((await fails(['secret', 'access-log', '--limit', 'lots'], admin)).stderr).toContain(
      '--limit "lots" must be a positive whole number',
    );
  });

  it('tokens: list shows no values, and a revoked token stops working', async () => {
    const second = (await ok(['token', 'create', 'alice-ci'], alice)).stdout.trim();
    const ci = as(second);
    expect((await ok(['whoami'], ci)).stdout).toMatch(/^user: +alice$/m);

    const list = await ok(['token', 'list'], alice);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+USER\s+CREATED\s+LAST USED$/m);
    expect(list.stdout).toMatch(/^\S+\s+alice-laptop\s+alice\s/m);
    expect(list.stdout).toMatch(/^\S+\s+alice-ci\s+alice\s/m);
    expect(list.stdout).not.toContain('bob-laptop');
    expect(list.stdout).not.toContain(second);
    const bobsTokens = await ok(['token', 'list', '--user', 'bob'], admin);
    expect(bobsTokens.stdout).toMatch(/^\S+\s+bob-laptop\s+bob\s/m);
    await fails(['token', 'list', '--user', 'bob'], alice);

    const tokens = JSON.parse((await ok(['token', 'list', '--json'], alice)).stdout) as {
      id: number | string;
      name: string;
    }[];
    const id = String(tokens.find((t) => t.name === 'alice-ci')!.id);
    await fails(['token', 'revoke', id], bob);
    expect((await ok(['token', 'revoke', id], alice)).stdout).toBe(`revoked API token ${id}\n`);
    const revoked = await fails(['whoami'], ci);
    expect(revoked.stderr).toContain('invalid API token');
    await ok(['whoami'], alice);
  });

  it('site admins come and go, but never the last one; removing and deleting users', async () => {
    expect((await ok(['user', 'set-admin', 'bob'], admin)).stdout).toBe('bob is now a site admin\n');
    await ok(['user', 'list'], bob);
    expect((await ok(['user', 'unset-admin', 'bob'], admin)).stdout).toBe('bob is no longer a site admin\n');
    await fails(['user', 'list'], bob);
    await fails(['user', 'unset-admin', 'admin'], admin);
    await fails(['user', 'delete', 'admin'], admin);

    expect((await ok(['org', 'remove-member', 'acme', 'bob'], alice)).stdout).toContain('removed bob from acme');
    await fails(['org', 'members', 'acme'], bob);
    expect((await ok(['whoami'], bob)).stdout).toMatch(/^orgs: +-$/m);

    expect((await ok(['user', 'delete', 'bob'], admin)).stdout).toContain('deleted user bob');
    expect((await fails(['whoami'], bob)).stderr).toContain('invalid API token');
    expect((await ok(['user', 'list', '--json'], admin)).stdout).not.toContain('"bob"');
  });

  it('no command printed a secret value', () => {
    expect(outputs.length).toBeGreaterThan(50);
    for (const out of outputs) for (const value of VALUES) expect(out).not.toContain(value);
  });
});
