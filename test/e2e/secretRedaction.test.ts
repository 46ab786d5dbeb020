// End to end: a job's secret reaches its steps' env, and no form of its value leaves the executor, whichever way a
// step prints it: raw, base64 (alone or inside a longer encoded string), URL-encoded, JSON-escaped, a character at
// a time, across two writes, on stderr, or in the last line of a failing step. A real server and a real (shell)
// executor.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { redactionForms } from '../../src/executor/redactor.js';
import { TestClient } from '../support/api.js';
import {
  EXECUTORS_TOKEN,
  startExecutor,
  startServer,
  type ExecutorHandle,
  type ServerHandle,
} from '../support/processes.js';

const NAME = 'DEPLOY_PASSWORD';
// Characters that URL and JSON encoding change, and bytes whose base64 holds "+" and "/".
const VALUE = 'p@ss/w0rd "x" +y~?>>';
const MASK = `\${{ secrets.${NAME} }}`;
const QUEUE = 'secrets';

let server: ServerHandle;
let executor: ExecutorHandle;
let client: TestClient;

beforeAll(async () => {
  server = await startServer({ name: 'secret-redaction-server' });
  client = new TestClient(server.url);
  executor = await startExecutor(server.url, {
    name: 'secret-redaction-exec',
    queues: [QUEUE],
    env: { EXECUTOR_LOG_FLUSH_INTERVAL: '100ms' },
  });
  const created = await client.call('POST', '/secrets', { name: NAME, value: VALUE, namespace: 'global' });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
});

afterAll(async () => {
  await executor?.stop();
  await server?.stop();
});

/** The forms of the value that must not appear anywhere (its raw value and every encoding the redactor knows). */
function leaked(text: string): string[] {
  return redactionForms(VALUE).filter((form) => text.includes(form));
}

const node = (expression: string): string => `node -e 'process.stdout.write(${expression} + "\\n")'`;

describe('secret redaction', () => {
  it("sets the secret in the steps' env and masks every form of it in the stored log", async () => {
    const sha = createHash('sha256').update(VALUE).digest('hex');
    const job = await client.submit({
      queue: QUEUE,
      secrets: [NAME],
      steps: [
        {
          key: 'env',
          run: [
            `[ "\${#${NAME}}" -eq ${VALUE.length} ]`,
            `[ "$(printf %s "$${NAME}" | sha256sum | cut -d' ' -f1)" = ${sha} ]`,
            'echo "the secret is in the env"',
          ].join('\n'),
        },
        { key: 'raw', run: `echo "raw: $${NAME}"` },
        {
          key: 'base64',
          run: [
            `printf %s "$${NAME}" | base64`,
            `echo "$${NAME}" | base64`,
            `printf 'user:%s' "$${NAME}" | base64`,
            // The value at each of the three byte positions of a base64 group, with text after it too.
            `for p in a ab abc; do printf '%s%s-tail' "$p" "$${NAME}" | base64; done`,
            `printf %s "$${NAME}" | base64 | tr '+/' '-_' | tr -d '='`,
          ].join('\n'),
        },
        {
          key: 'url',
          run: [
            node(`"url: " + encodeURIComponent(process.env.${NAME})`),
            node(`"form: " + new URLSearchParams({ password: process.env.${NAME} })`),
            node(
              `"lower: " + encodeURIComponent(process.env.${NAME}).replace(/%[0-9A-F]{2}/g, (h) => h.toLowerCase())`,
            ),
          ].join('\n'),
        },
        { key: 'json', run: node(`"json: " + JSON.stringify({ password: process.env.${NAME} })`) },
        {
          key: 'chars',
          // One character at a time, with pauses longer than the log flush interval, on one line.
          run: `i=1\nprintf 'chars: '\nwhile [ $i -le \${#${NAME}} ]; do printf '%s' "$(printf '%s' "$${NAME}" | cut -c$i)"; sleep 0.05; i=$((i+1)); done\necho ' end'`,
        },
        {
          key: 'split',
          run: `printf 'split: %s' "\${${NAME}%????}"\nsleep 0.3\nprintf '%s end\\n' "\${${NAME}#"\${${NAME}%????}"}"`,
        },
        { key: 'stderr', run: `echo "err: $${NAME}" >&2` },
      ],
    });
    const done = await client.waitFor(job.id, (j) => ['completed', 'failed'].includes(j.state), 60_000);
    const { entries } = await client.logs(job.id);
    expect(done.state, JSON.stringify(entries)).toBe('completed');
    const text = entries.map((e) => e.out).join('');

    expect(leaked(text)).toEqual([]);
    expect(leaked(JSON.stringify(entries))).toEqual([]);
    const out = Object.fromEntries(entries.map((e) => [e.key, e.out]));
    expect(out['step.env']).toBe('stdout: the secret is in the env\n');
    expect(out['step.raw']).toBe(`stdout: raw: ${MASK}\n`);
    expect(out['step.url']).toBe(`stdout: url: ${MASK}\nstdout: form: password=${MASK}\nstdout: lower: ${MASK}\n`);
    expect(out['step.json']).toBe(`stdout: json: {"password":"${MASK}"}\n`);
    expect(out['step.chars']).toBe(`stdout: chars: ${MASK} end\n`);
    expect(out['step.split']).toBe(`stdout: split: ${MASK} end\n`);
    expect(out['step.stderr']).toBe(`stderr: err: ${MASK}\n`);
    // Every base64 line is masked; what is left of each is at most the characters the value shares with its neighbours.
    const base64Lines = out['step.base64'].trimEnd().split('\n');
    expect(base64Lines).toHaveLength(7);
    for (const line of base64Lines) expect(line).toContain(MASK);
    expect(out['step.base64']).toContain(`stdout: ${MASK}\n`);
  });

  it("masks the secret in a failing step's last line and in the failure message", async () => {
    const job = await client.submit({
      queue: QUEUE,
      secrets: [NAME],
      steps: [{ key: 'fail', run: `echo starting\nprintf 'giving up with %s' "$${NAME}" >&2\nexit 3` }],
    });
    const failed = await client.waitForState(job.id, 'failed', 60_000);
    const { entries } = await client.logs(job.id);
    expect(entries[0].out).toBe(`stdout: starting\nstderr: giving up with ${MASK}\n`);
    expect(entries[0].exitCode).toBe(3);
    expect(failed.failureMessage).toBeTruthy();
    expect(leaked(failed.failureMessage ?? '')).toEqual([]);
    const { job: record, attempts } = await client.job(job.id);
    expect(leaked(JSON.stringify({ record: { ...record, spec: undefined }, attempts }))).toEqual([]);
  });

  it('masks each line of a multi-line secret', async () => {
    const key =
      '-----BEGIN TEST KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7o4qne60TB3wo\n-----END TEST KEY-----\n';
    const created = await client.call('POST', '/secrets', { name: 'TEST_KEY', value: key, namespace: 'global' });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const job = await client.submit({
      queue: QUEUE,
      secrets: ['TEST_KEY'],
      steps: [
        { key: 'key', run: 'printf %s "$TEST_KEY" | sed "s/^/line: /"\nprintf %s "$TEST_KEY" | base64 -w0; echo' },
      ],
    });
    await client.waitForState(job.id, 'completed', 60_000);
    const { entries } = await client.logs(job.id);
    expect(entries[0].out).toBe(
      `${'stdout: line: ${{ secrets.TEST_KEY }}\n'.repeat(4)}stdout: \${{ secrets.TEST_KEY }}\n`,
    );
  });

  it("keeps the value and the tokens out of the executor's own output", () => {
    const output = executor.proc.output;
    expect(output).toContain('job finished');
    expect(leaked(output)).toEqual([]);
    expect(output).not.toContain(EXECUTORS_TOKEN);
    expect(output).not.toMatch(/dhj_[0-9a-f]{16,}/);
  });
});
