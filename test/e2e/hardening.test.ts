// The server's hardening, on real processes: body size limits (413), the auth-failure limit per source address
// (429 with Retry-After, others unaffected), security headers, HTTPS with a self-signed certificate that the CLI and
// an executor trust through NODE_EXTRA_CA_CERTS, and no credential in any log line.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logRedact } from '../../src/core/logRedact.js';
import {
  ADMIN_TOKEN,
  CLI,
  EXECUTORS_TOKEN,
  Proc,
  startExecutor,
  tempDir,
  type ExecutorHandle,
  runCli,
} from '../support/processes.js';
import { request, type Answer } from '../support/request.js';

/** A `dockhand server` started by hand (the shared helper speaks plain HTTP on 127.0.0.1 only). */
async function launchServer(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ proc: Proc; port: number; url: string }> {
  const dataDir = await tempDir(name);
  const proc = new Proc(
    ['server', '--port', '0', '--data-dir', dataDir, ...args],
    {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
      DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
      // As much logging as there is, so the check that no credential is logged means something.
      DOCKHAND_LOG_LEVEL: 'debug',
      ...env,
    },
    name,
  );
  const match = await proc.waitFor(/listening on (https?):\/\/127\.0\.0\.1:(\d+)/);
  return { proc, port: Number(match[2]), url: `${match[1]}://127.0.0.1:${match[2]}` };
}

const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
const executorAuth = { authorization: `token-executor ${EXECUTORS_TOKEN}` };
const BAD_TOKENS = [
  'dha_wrong_token_guess_0001',
  'dha_wrong_token_guess_0002',
  'dha_wrong_token_guess_0003',
  'dha_wrong_token_guess_0004',
];
const jobTokens: string[] = [];
const procs: Proc[] = [];

describe('a plain-HTTP server', () => {
  let server: Awaited<ReturnType<typeof launchServer>>;
  const LIMIT = 4;

  beforeAll(async () => {
    // On every address, so a second loopback address (127.0.0.2) is a second client.
    server = await launchServer('hardening-server', ['--host', '0.0.0.0'], {
      DOCKHAND_AUTH_FAILURE_LIMIT: String(LIMIT),
      DOCKHAND_AUTH_FAILURE_WINDOW: '3s',
    });
    procs.push(server.proc);
  });

  afterAll(async () => {
    await server?.proc.stop();
  });

  it('refuses a body over the route limit with 413 naming the limit and what to do', async () => {
    const small = await request(`${server.url}/api/executor/v1/dequeue`, {
      method: 'POST',
      headers: { ...executorAuth, 'content-type': 'application/json' },
      body: '{"executorName": "x", "pad": "xxxx',
      declaredLength: 1.5 * 1024 * 1024,
    });
    expect(small.status).toBe(413);
    expect(small.json.error).toMatch(/at most 1MiB \(1048576 bytes\)/);
    expect(small.json.error).toMatch(/send a smaller body/);
    expect(small.headers['content-type']).toMatch(/^application\/json/);

    // Job submission takes up to 16 MiB (a spec may carry 8 MiB of files): 2 MiB of files is fine, 17 MiB is not.
    const files = { 'big.txt': 'x'.repeat(2 * 1024 * 1024) };
    const accepted = await request(`${server.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ queue: 'nobody-listens', namespace: 'global', files, steps: [{ run: 'true' }] }),
    });
    expect(accepted.status, accepted.text).toBe(201);
    const huge = await request(`${server.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: '{"queue": "q", "files": {"huge.txt": "xxxx',
      declaredLength: 17 * 1024 * 1024,
    });
    expect(huge.status).toBe(413);
    expect(huge.json.error).toMatch(/at most 16MiB/);
    expect(huge.json.error).toMatch(/files under 8 MiB/);
  });

  it('refuses deeply nested YAML with 400 instead of crashing (the second such document of 20 kB used to kill the process)', async () => {
    const answers: Answer[] = [];
    for (const body of ['{'.repeat(20_000), '{'.repeat(20_000), '- '.repeat(20_000) + 'x', '['.repeat(100_000)]) {
      answers.push(
        await request(`${server.url}/api/v1/jobs`, {
          method: 'POST',
          headers: { ...admin, 'content-type': 'application/yaml' },
          body,
        }),
      );
    }
    for (const answer of answers) {
      expect(answer.status).toBe(400);
      expect(answer.json.error).toMatch(/nested more than \d+/);
    }
    // Without credentials the body is not even read.
    // (From an address of its own: 127.0.0.1 must stay under the auth-failure limit for the test below.)
    const anonymous = await request(`${server.url.replace('127.0.0.1', '127.0.0.3')}/api/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/yaml' },
      body: '{'.repeat(20_000),
      localAddress: '127.0.0.3',
    });
    expect(anonymous.status).toBe(401);
    expect((await request(`${server.url}/healthz`)).status).toBe(200);
    expect(server.proc.child.exitCode).toBeNull();
  });

  it('sends security headers and Cache-Control: no-store on answers and errors, without HSTS over plain HTTP', async () => {
    for (const answer of [
      await request(`${server.url}/healthz`),
      await request(`${server.url}/api/v1/jobs`, { headers: admin }),
      await request(`${server.url}/api/v1/jobs/abc`, { headers: admin }),
      await request(`${server.url}/no/such/route`),
    ]) {
      expect(answer.headers['x-content-type-options']).toBe('nosniff');
      expect(answer.headers['x-frame-options']).toBe('DENY');
      expect(answer.headers['referrer-policy']).toBe('no-referrer');
      expect(answer.headers['content-security-policy']).toContain("default-src 'self'");
      expect(answer.headers['content-security-policy']).toContain("frame-ancestors 'none'");
      expect(answer.headers['content-security-policy']).not.toContain('upgrade-insecure-requests');
      expect(answer.headers['cache-control']).toBe('no-store');
      expect(answer.headers['strict-transport-security']).toBeUndefined();
    }
  });

  it('runs a job through the executor protocol (its job token must not be logged either)', async () => {
    const submitted = await request(`${server.url}/api/v1/jobs`, {
      method: 'POST',
      headers: { ...admin, 'content-type': 'application/json' },
      body: JSON.stringify({ queue: 'raw', namespace: 'global', steps: [{ run: 'true' }] }),
    });
    expect(submitted.status).toBe(201);
    const dequeued = await request(`${server.url}/api/executor/v1/dequeue`, {
      method: 'POST',
      headers: { ...executorAuth, 'content-type': 'application/json' },
      body: JSON.stringify({ executorName: 'raw-executor', version: 'test', queues: ['raw'], waitMs: 0 }),
    });
    expect(dequeued.status).toBe(200);
    const job = dequeued.json as { id: number; token: string };
    jobTokens.push(job.token);
    const jobAuth = { authorization: `Bearer ${job.token}`, 'content-type': 'application/json' };
    const append = await request(`${server.url}/api/executor/v1/jobs/${job.id}/logs`, {
      method: 'POST',
      headers: jobAuth,
      body: JSON.stringify({
        entries: [{ index: 0, key: 'step.0', command: ['true'], startTime: Date.now(), offset: 0, out: 'hi\n' }],
      }),
    });
    expect(append.status).toBe(200);
    // A job token is good for its own job only.
    const other = await request(`${server.url}/api/executor/v1/jobs/${job.id + 1000}/complete`, {
      method: 'POST',
      headers: jobAuth,
      body: '{}',
    });
    expect(other.status).toBe(403);
    const complete = await request(`${server.url}/api/executor/v1/jobs/${job.id}/complete`, {
      method: 'POST',
      headers: jobAuth,
      body: '{}',
    });
    expect(complete.status).toBe(200);
  });

  it('answers 429 with Retry-After to an address after repeated bad tokens, without checking credentials; others are unaffected', async () => {
    const from = '127.0.0.2';
    const url = `${server.url.replace('127.0.0.1', from)}/api/v1/jobs`;
    for (let i = 0; i < LIMIT; i++) {
      const answer = await request(url, {
        headers: { authorization: `Bearer ${BAD_TOKENS[i % BAD_TOKENS.length]}` },
        localAddress: from,
      });
      expect(answer.status).toBe(401);
    }
    const blocked = await request(url, { headers: { authorization: `Bearer ${BAD_TOKENS[0]}` }, localAddress: from });
    expect(blocked.status).toBe(429);
    const retryAfter = Number(blocked.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(3);
    expect(blocked.json.error).toMatch(/too many failed authentications from 127\.0\.0\.2/);
    expect(blocked.json.error).toMatch(/retry after \d+ s/);
    expect(blocked.headers['x-content-type-options']).toBe('nosniff');
    // Even the right token is refused: the answer tells nothing about the credentials while blocked.
    const right = await request(url, { headers: admin, localAddress: from });
    expect(right.status).toBe(429);
    const executorCall = await request(`${server.url.replace('127.0.0.1', from)}/api/executor/v1/heartbeat`, {
      method: 'POST',
      headers: { ...executorAuth, 'content-type': 'application/json' },
      body: '{}',
      localAddress: from,
    });
    expect(executorCall.status).toBe(429);
    // Public routes stay reachable from the blocked address, and another address is unaffected.
    expect((await request(`${server.url.replace('127.0.0.1', from)}/healthz`, { localAddress: from })).status).toBe(
      200,
    );
    expect((await request(`${server.url.replace('127.0.0.1', from)}/metrics`, { localAddress: from })).status).toBe(
      200,
    );
    const elsewhere = await request(url.replace(from, '127.0.0.1'), { headers: admin, localAddress: '127.0.0.1' });
    expect(elsewhere.status).toBe(200);
    // Once the window has passed, the address is heard again.
    await sleep(retryAfter * 1000 + 200);
    const later = await request(url, { headers: admin, localAddress: from });
    expect(later.status).toBe(200);
  });

  it('logs that an address was blocked, without any token', async () => {
    await server.proc.waitFor(/too many failed authentications: refusing this address/);
    expect(server.proc.output).toContain('"ip":"127.0.0.2"');
  });
});

describe('an HTTPS server with a self-signed certificate', () => {
  let dir: string;
  let cert: string;
  let key: string;
  let ca: Buffer;
  let server: Awaited<ReturnType<typeof launchServer>>;
  let executor: ExecutorHandle | undefined;

  beforeAll(async () => {
    dir = await tempDir('tls');
    cert = path.join(dir, 'cert.pem');
    key = path.join(dir, 'key.pem');
    await new Promise<void>((resolve, reject) => {
      execFile(
        'openssl',
        [
          'req',
          '-x509',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:prime256v1',
          '-nodes',
          '-keyout',
          key,
          '-out',
          cert,
          '-days',
          '2',
          '-subj',
          '/CN=localhost',
          '-addext',
          'subjectAltName=IP:127.0.0.1,DNS:localhost',
        ],
        (err, _stdout, stderr) => (err ? reject(new Error(`openssl failed: ${stderr}`)) : resolve()),
      );
    });
    ca = readFileSync(cert);
    server = await launchServer(
      'hardening-tls-server',
      ['--host', '127.0.0.1', '--tls-cert', cert, '--tls-key', key],
      {},
    );
    procs.push(server.proc);
  });

  afterAll(async () => {
    await executor?.stop();
    await server?.proc.stop();
  });

  it('prints an https URL and serves HTTPS only, with HSTS', async () => {
    expect(server.url).toMatch(/^https:\/\//);
    expect(server.proc.output).toMatch(/EXECUTOR_FRONTEND_URL=https:\/\/127\.0\.0\.1:\d+/);
    const health = await request(`${server.url}/healthz`, { ca });
    expect(health.status).toBe(200);
    expect(health.headers['strict-transport-security']).toMatch(/^max-age=\d+/);
    expect(health.headers['content-security-policy']).toContain('upgrade-insecure-requests');
    // Without the certificate trusted, a client refuses the connection.
    await expect(request(`${server.url}/healthz`)).rejects.toThrow(/self[- ]signed/);
    // Plain HTTP on the same port is not answered as HTTP.
    await expect(request(`${server.url.replace('https:', 'http:')}/healthz`)).rejects.toThrow();
  });

  it('is reached by an executor and the CLI that trust the certificate through NODE_EXTRA_CA_CERTS: a job runs', async () => {
    executor = await startExecutor(server.url, {
      name: 'tls-exec',
      queues: ['tls'],
      env: { NODE_EXTRA_CA_CERTS: cert },
    });
    procs.push(executor.proc);
    const spec = path.join(dir, 'job.yaml');
    writeFileSync(spec, 'queue: tls\nnamespace: global\nsteps:\n  - run: echo over-tls\n');
    const env = { DOCKHAND_URL: server.url, DOCKHAND_TOKEN: ADMIN_TOKEN, HOME: dir, NODE_EXTRA_CA_CERTS: cert };
    const run = await runCli(['job', 'submit', spec, '--follow'], env);
    expect(run.code, `${run.stdout}${run.stderr}`).toBe(0);
    expect(run.stdout).toContain('over-tls');
    // Without it, the CLI cannot verify the server and says it cannot reach it.
    const untrusted = await runCli(['job', 'list'], { ...env, NODE_EXTRA_CA_CERTS: '' });
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/SELF_SIGNED|self[- ]signed/i);
  });

  it('refuses half a TLS configuration or an unreadable file with an error naming the flag', async () => {
    const env = {
      DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
      DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
      DOCKHAND_TLS_CERT: '',
      DOCKHAND_TLS_KEY: '',
    };
    const data = ['--port', '0', '--data-dir', dir];
    const onlyCert = await runCli(['server', ...data, '--tls-cert', cert], env);
    expect(onlyCert.code).toBe(2);
    expect(onlyCert.stderr).toMatch(/^dockhand: --tls-cert is set but --tls-key \(DOCKHAND_TLS_KEY\) is missing/);
    const onlyKeyEnv = await runCli(['server', ...data], { ...env, DOCKHAND_TLS_KEY: key });
    expect(onlyKeyEnv.code).toBe(2);
    expect(onlyKeyEnv.stderr).toMatch(/DOCKHAND_TLS_KEY is set but --tls-cert \(DOCKHAND_TLS_CERT\) is missing/);
    const unreadable = await runCli(
      ['server', ...data, '--tls-cert', cert, '--tls-key', path.join(dir, 'missing.pem')],
      env,
    );
    expect(unreadable.code).toBe(2);
    expect(unreadable.stderr).toMatch(/--tls-key .*missing\.pem: cannot read the private key \(ENOENT\)/);
    const swapped = await runCli(['server', ...data, '--tls-cert', key, '--tls-key', cert], env);
    expect(swapped.code).toBe(2);
    expect(swapped.stderr).toMatch(/not a usable PEM certificate and matching private key/);
    expect(`${onlyCert.stderr}${unreadable.stderr}${swapped.stderr}`).not.toContain(
      readFileSync(key, 'utf8').split('\n')[1],
    );
  });
});

describe('the logs', () => {
  it('never contain a token that was used: executor secret, API tokens, job tokens, wrong guesses', () => {
    expect(jobTokens.length).toBeGreaterThan(0);
    expect(procs.length).toBeGreaterThanOrEqual(2);
    for (const proc of procs) {
      for (const token of [EXECUTORS_TOKEN, ADMIN_TOKEN, ...BAD_TOKENS, ...jobTokens])
        expect(proc.output).not.toContain(token);
      expect(proc.output).not.toMatch(/"authorization":"(?!\[redacted\])/i);
    }
  });

  it('redact credentials wherever request data or configuration is handed to a logger', () => {
    const lines: string[] = [];
    const sink = new Writable({
      write: (chunk: Buffer, _enc, done) => {
        lines.push(chunk.toString());
        done();
      },
    });
    const log = pino({ level: 'info', ...logRedact }, sink);
    log.error(
      {
        req: {
          method: 'GET',
          headers: {
            authorization: `Bearer ${ADMIN_TOKEN}`,
            cookie: 'session=s3cr3t',
            'proxy-authorization': 'Basic czNjcjN0',
          },
        },
      },
      'request',
    );
    log.warn({ headers: { authorization: `token-executor ${EXECUTORS_TOKEN}` }, authorization: 'x' }, 'raw headers');
    log.info({ job: { id: 1, token: 'dhj_job_token_value' }, token: 'dha_top_level_token' }, 'a dequeued job');
    log.info(
      { config: { executorsAccessToken: EXECUTORS_TOKEN, adminToken: ADMIN_TOKEN, frontendPassword: EXECUTORS_TOKEN } },
      'configuration',
    );
    const all = lines.join('');
    for (const secret of [
      ADMIN_TOKEN,
      EXECUTORS_TOKEN,
      's3cr3t',
      'czNjcjN0',
      'dhj_job_token_value',
      'dha_top_level_token',
    ])
      expect(all).not.toContain(secret);
    expect(all.match(/\[redacted\]/g)?.length).toBeGreaterThanOrEqual(9);
    expect(all).toContain('"method":"GET"');
  });
});
