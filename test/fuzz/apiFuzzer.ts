// A property-based fuzzer for the HTTP APIs, shared by test/fuzz/api.fuzz.test.ts and bench/fuzzApi.ts.
//
// It builds the app in-process (as server.ts composes it, on a SQLite store in a temporary directory) and walks the
// route table buildApp returns, so a route added later is fuzzed without editing this file. Each route gets
// generated requests (app.inject): arbitrary JSON, objects with the route schema's own keys and random values,
// schema-shaped values, mutations of a valid body, wrong content types, malformed JSON and YAML, huge bodies,
// random path parameters and query strings, mostly valid credentials and sometimes none or garbage, from a pool of
// source addresses (the auth-failure limiter is on). A `waitMs` in any body is forced to 0, so no request is held.
//
// What must hold for every answer: no 5xx; a 4xx is JSON whose `error` is a non-empty string; a validation 400
// ("invalid ...") carries `issues` naming fields; the security headers are there. And for the whole run: no
// unhandled rejection or uncaught exception, no error logged, and no credential in any log line.
import { writeSync } from 'node:fs';
import { Writable } from 'node:stream';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import YAML from 'yaml';
import { z } from 'zod';
import { logRedact } from '../../src/core/logRedact.js';
import { hashToken } from '../../src/core/tokens.js';
import { createCoordinator } from '../../src/server/coordinator.js';
import type { RouteDef } from '../../src/server/http.js';
import { Keyring } from '../../src/server/secrets/keyring.js';
import { Secrets } from '../../src/server/secrets/secrets.js';
import { bootstrapAdminUser } from '../../src/server/server.js';
import { yamlNestingProblem } from '../../src/server/yamlBody.js';
import { SqliteStore } from '../../src/store/sqlite/sqliteStore.js';

const FUZZ_ADMIN_TOKEN = 'dha_fuzz_admin_token_0123456789abcdef0123';
export const FUZZ_EXECUTORS_TOKEN = 'fuzz-executors-token-0123456789abcdef0123';
const FUZZ_QUEUE = 'fuzz';
const REQUEST_TIMEOUT_MS = 10_000;
/** The fuzzer's own set-up requests come from an address no generated request uses, so the limiter never blocks them. */
const HARNESS_ADDRESS = '192.0.2.1';

type AnyRoute = RouteDef<any, any>;

interface LiveAttempt {
  id: number;
  attempt: number;
  token: string;
}

/** What the fuzzer knows about the store, so generated requests can name real jobs and attempts. */
interface FuzzState {
  jobIds: number[];
  attempts: LiveAttempt[];
  /** A finished job that only the log-stream routes name, so a stream never waits for a job that is still running. */
  reservedJobId: number;
  /** Every credential handed out, to check that none reaches the log. */
  secrets: Set<string>;
  /** A site admin's API token; replaced when fuzzed account routes take the admin's rights or token away. */
  adminToken: string;
}

export interface FuzzTarget {
  app: FastifyInstance;
  store: SqliteStore;
  routes: AnyRoute[];
  state: FuzzState;
  logLines: string[];
  close(): Promise<void>;
}

export interface FuzzStats {
  requests: number;
  elapsedMs: number;
  byStatus: Record<string, number>;
  byRoute: Record<string, number>;
}

// ---------------------------------------------------------------------------------------------------------------
// The target

export async function createFuzzTarget(): Promise<FuzzTarget> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-fuzz-'));
  const store = new SqliteStore(path.join(dir, 'dockhand.db'));
  await store.migrate();
  const admin = await bootstrapAdminUser(store.accounts);
  await store.accounts.createToken(admin.id, 'fuzz', hashToken(FUZZ_ADMIN_TOKEN), Date.now());
  const secrets = new Secrets(store.accounts, Keyring.load({}, dir));
  const logLines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(...chunk.toString().split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'warn', ...logRedact }, sink);
  const config = {
    executorsAccessToken: FUZZ_EXECUTORS_TOKEN,
    stalledJobTimeoutMs: 25_000,
    maxJobResets: 3,
    retryBackoffMs: 5_000,
  };
  const { app, routes } = createCoordinator({
    store,
    secrets,
    config,
    log: logger,
    // The production limit, with a short window so that blocked addresses come back within the run.
    http: { authFailures: { limit: 30, windowMs: 2_000 } },
  });
  await app.ready();

  const state: FuzzState = {
    jobIds: [],
    attempts: [],
    reservedJobId: 0,
    secrets: new Set([FUZZ_ADMIN_TOKEN, FUZZ_EXECUTORS_TOKEN]),
    adminToken: FUZZ_ADMIN_TOKEN,
  };
  const reserved = (await submitJob(app, state, 'fuzz-reserved'))!;
  const cancel = await app.inject({
    method: 'POST',
    url: `/api/v1/jobs/${reserved}/cancel`,
    headers: { authorization: `Bearer ${state.adminToken}` },
    remoteAddress: HARNESS_ADDRESS,
  });
  if (cancel.statusCode !== 200) throw new Error(`fuzz setup: cancel answered ${cancel.statusCode} ${cancel.body}`);
  state.reservedJobId = reserved;
  const target: FuzzTarget = {
    app,
    store,
    routes,
    state,
    logLines,
    async close() {
      await app.close();
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
  for (let i = 0; i < 4; i++) await replenish(target);
  return target;
}

/** Submits a job as the admin; undefined when the admin token no longer works (401/403). */
async function submitJob(app: FastifyInstance, state: FuzzState, queue: string): Promise<number | undefined> {
  const res = await app.inject({
    method: 'POST',
    url: '/api/v1/jobs',
    headers: { authorization: `Bearer ${state.adminToken}` },
    remoteAddress: HARNESS_ADDRESS,
    payload: { queue, namespace: 'global', steps: [{ run: 'echo fuzz' }] },
  });
  if (res.statusCode === 401 || res.statusCode === 403) return undefined;
  if (res.statusCode !== 201) throw new Error(`fuzz: a valid submit answered ${res.statusCode} ${res.body}`);
  return (res.json() as { job: { id: number } }).job.id;
}

let adminCount = 0;

/** The fuzzed account routes may demote or delete the admin, or delete its token: make a new site admin. */
async function newAdmin(target: FuzzTarget): Promise<void> {
  const name = `fuzz-admin-${++adminCount}`;
  const user =
    (await target.store.accounts.createUser(name, true, Date.now())) ?? (await target.store.accounts.getUser(name))!;
  const token = `dha_fuzz_admin_${adminCount}_token_0123456789abcdef0123`;
  await target.store.accounts.createToken(user.id, 'fuzz', hashToken(token), Date.now());
  target.state.adminToken = token;
  target.state.secrets.add(token);
}

/** A fresh job and attempt, so the job-token routes have a current attempt to talk about. */
async function replenish(target: FuzzTarget): Promise<void> {
  const { app, state } = target;
  if (process.env.FUZZ_TRACE) writeSync(2, 'fuzz> replenish\n');
  let id = await submitJob(app, state, FUZZ_QUEUE);
  if (id === undefined) {
    await newAdmin(target);
    id = await submitJob(app, state, FUZZ_QUEUE);
    if (id === undefined) throw new Error('fuzz: a fresh site admin cannot submit a job');
  }
  state.jobIds.push(id);
  const res = await app.inject({
    method: 'POST',
    url: '/api/executor/v1/dequeue',
    headers: { authorization: `token-executor ${FUZZ_EXECUTORS_TOKEN}` },
    remoteAddress: HARNESS_ADDRESS,
    payload: { executorName: 'fuzz-executor', version: 'fuzz', queues: [FUZZ_QUEUE], waitMs: 0 },
  });
  if (res.statusCode === 200) remember(state, res.json());
}

function remember(state: FuzzState, job: { id?: unknown; attempt?: unknown; token?: unknown }): void {
  if (typeof job.id === 'number' && typeof job.attempt === 'number' && typeof job.token === 'string') {
    state.attempts.push({ id: job.id, attempt: job.attempt, token: job.token });
    state.secrets.add(job.token);
    if (state.attempts.length > 50) state.attempts.shift();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Generated requests: plain data (so fast-check can shrink them), resolved against the state when sent

type ParamPlan = { kind: 'job'; pick: number } | { kind: 'literal'; value: string } | { kind: 'raw'; value: string };
type AuthPlan =
  | { kind: 'valid' }
  | { kind: 'none' }
  | { kind: 'header'; value: string }
  | { kind: 'other'; which: 'admin' | 'executor' | 'job' };
type BodyPlan =
  | { kind: 'none' }
  | { kind: 'value'; value: unknown; as: 'json' | 'yaml'; contentType: string }
  | { kind: 'text'; text: string; contentType?: string }
  | { kind: 'huge'; bytes: number; into: unknown; contentType: string }
  | { kind: 'deep'; shape: number; depth: number; contentType: string };

/** Ways to nest a document `depth` levels deep, in JSON or YAML. */
const DEEP_SHAPES: ((depth: number) => string)[] = [
  (n) => '{'.repeat(n),
  (n) => '['.repeat(n) + '1' + ']'.repeat(n),
  (n) => '{"a":'.repeat(n) + '1' + '}'.repeat(n),
  (n) => '- '.repeat(n) + 'x',
  (n) => '? '.repeat(n) + 'x',
  (n) => '[{'.repeat(n),
  (n) => Array.from({ length: Math.min(n, 5_000) }, (_, i) => `${' '.repeat(i)}a:`).join('\n') + ' 1',
  (n) => 'queue: fuzz\nsteps:\n  - run: x\n    env: ' + '{a: '.repeat(n) + '1' + '}'.repeat(n),
];

export interface RequestPlan {
  method: string;
  params: ParamPlan[];
  query: string;
  auth: AuthPlan;
  attemptPick: number;
  body: BodyPlan;
  remote: string;
}

const WEIRD_STRINGS = [
  '',
  ' ',
  '\u0000',
  '\t\n',
  '..',
  '../../etc/passwd',
  '%00',
  '%',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  '😀',
  '\ud800',
  '\udfff',
  'a'.repeat(5000),
  '${HOME}',
  '$(id)',
  '`id`',
  "'; DROP TABLE jobs; --",
  'null',
  'undefined',
  'NaN',
  'Infinity',
  '1e309',
  '-0',
  '0x10',
  '0b1',
  '1_000',
  ' 1',
  '1 ',
  'true',
  '[]',
  '{}',
  '<script>alert(1)</script>',
  '\r\nX-Injected: 1',
  'user:',
  'org:',
  'global',
  'user:admin',
  'org:x/../y',
];
const SPECIAL_NUMBERS = [
  0,
  -0,
  -1,
  1,
  1.5,
  2 ** 31,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 2,
  1e21,
  1e308,
  -1e308,
  5e-324,
];

const weirdString = fc.constantFrom(...WEIRD_STRINGS);
const anyString = fc.oneof(
  { arbitrary: fc.string({ maxLength: 30 }), weight: 4 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 20 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 20 }), weight: 1 },
  { arbitrary: weirdString, weight: 3 },
);
const anyNumber = fc.oneof(
  fc.constantFrom(...SPECIAL_NUMBERS),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 4 },
  { arbitrary: anyString, weight: 3 },
  { arbitrary: anyNumber, weight: 2 },
  { arbitrary: fc.constantFrom(null, true, false, [], {}), weight: 1 },
);

/** A printable header value (the HTTP parser refuses anything else before the app sees it). */
const headerText = fc.string({ maxLength: 120 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x'));

// --- values from a route's JSON schema

type JsonSchema = Record<string, any> | boolean | undefined;

function resolveRef(ref: string, root: Record<string, any>): JsonSchema {
  if (ref === '#') return root;
  const parts = ref.replace(/^#\//, '').split('/');
  let node: any = root;
  for (const part of parts) node = node?.[part];
  return node;
}

function patternArb(pattern: string): fc.Arbitrary<string> {
  try {
    return fc.stringMatching(new RegExp(pattern)).filter((s) => s.length <= 200);
  } catch {
    return fc.string({ maxLength: 20 });
  }
}

/** Values that mostly satisfy `schema` (lengths capped), for bodies that get past validation into handlers. */
export function fromSchema(schema: JsonSchema, root: Record<string, any>, depth = 0): fc.Arbitrary<unknown> {
  if (schema === undefined || schema === true || (typeof schema === 'object' && Object.keys(schema).length === 0))
    return anyJson;
  if (schema === false) return anyJson;
  if (depth > 6) return fc.constant(null);
  if (typeof schema.$ref === 'string') return fromSchema(resolveRef(schema.$ref, root), root, depth + 1);
  if ('const' in schema) return fc.constant(schema.const);
  if (Array.isArray(schema.enum)) return fc.constantFrom(...(schema.enum as unknown[]));
  for (const key of ['anyOf', 'oneOf'] as const) {
    if (Array.isArray(schema[key]) && schema[key].length)
      return fc.oneof(...(schema[key] as JsonSchema[]).map((s) => fromSchema(s, root, depth + 1)));
  }
  if (Array.isArray(schema.allOf) && schema.allOf.length) return fromSchema(schema.allOf[0], root, depth + 1);
  const type = schema.type as string | string[] | undefined;
  if (Array.isArray(type)) return fc.oneof(...type.map((t) => fromSchema({ ...schema, type: t }, root, depth)));
  switch (type) {
    case 'object': {
      const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
      const keys = Object.keys(props);
      if (keys.length) {
        const required = ((schema.required ?? []) as string[]).filter((k) => keys.includes(k));
        const model = Object.fromEntries(keys.map((k) => [k, fromSchema(props[k], root, depth + 1)]));
        return fc.record(model, { requiredKeys: required });
      }
      const valueSchema = typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
      const keySchema =
        typeof schema.propertyNames === 'object' && typeof schema.propertyNames.pattern === 'string'
          ? patternArb(schema.propertyNames.pattern)
          : fc.string({ minLength: 1, maxLength: 12 });
      return fc.dictionary(keySchema, fromSchema(valueSchema, root, depth + 1), { maxKeys: 3 });
    }
    case 'array': {
      const min = Math.min(Number(schema.minItems ?? 0), 3);
      const max = Math.max(min, Math.min(Number(schema.maxItems ?? 3), 3));
      const items = Array.isArray(schema.prefixItems)
        ? fc.tuple(...(schema.prefixItems as JsonSchema[]).map((s) => fromSchema(s, root, depth + 1)))
        : fc.array(fromSchema(schema.items as JsonSchema, root, depth + 1), { minLength: min, maxLength: max });
      return items as fc.Arbitrary<unknown>;
    }
    case 'string': {
      if (typeof schema.pattern === 'string') return patternArb(schema.pattern);
      const min = Math.min(Number(schema.minLength ?? 0), 20);
      return fc.string({ minLength: min, maxLength: Math.max(min, Math.min(Number(schema.maxLength ?? 24), 24)) });
    }
    case 'integer':
    case 'number': {
      let min = typeof schema.minimum === 'number' ? schema.minimum : -1_000_000;
      let max = typeof schema.maximum === 'number' ? schema.maximum : 1_000_000;
      if (typeof schema.exclusiveMinimum === 'number') min = schema.exclusiveMinimum + (type === 'integer' ? 1 : 1e-9);
      if (typeof schema.exclusiveMaximum === 'number') max = schema.exclusiveMaximum - (type === 'integer' ? 1 : 1e-9);
      if (type === 'integer')
        return fc.integer({
          min: Math.max(Math.ceil(min), Number.MIN_SAFE_INTEGER),
          max: Math.min(Math.floor(max), Number.MAX_SAFE_INTEGER),
        });
      return fc.double({ min, max, noNaN: true, noDefaultInfinity: true });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    default:
      return anyJson;
  }
}

function jsonSchemaOf(schema: z.ZodType | undefined): Record<string, any> | undefined {
  if (!schema) return undefined;
  try {
    return z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, any>;
  } catch {
    return undefined;
  }
}

/** Every property name anywhere in a schema: keys for the "right keys, random values" bodies. */
function schemaKeys(schema: JsonSchema, out = new Set<string>(), depth = 0): string[] {
  if (schema && typeof schema === 'object' && depth < 8) {
    for (const key of Object.keys(schema.properties ?? {})) out.add(key);
    for (const value of Object.values(schema)) {
      if (value && typeof value === 'object') {
        if (Array.isArray(value)) value.forEach((v) => schemaKeys(v, out, depth + 1));
        else schemaKeys(value, out, depth + 1);
      }
    }
  }
  return [...out];
}

// --- hand-written valid bodies for the routes the fuzzer knows; any other route starts from its schema

function knownSeeds(def: AnyRoute): unknown[] {
  const now = 1_700_000_000_000;
  if (def.method === 'POST' && def.url === '/api/v1/jobs') {
    return [
      { queue: FUZZ_QUEUE, steps: [{ run: 'echo hi' }] },
      {
        queue: FUZZ_QUEUE,
        namespace: 'global',
        files: { 'a/b.txt': 'hello', 'run.sh': '#!/bin/sh\necho hi\n' },
        steps: [
          { key: 'one', run: 'sh run.sh', dir: 'a', env: { A: '1', B: true, C: 3 }, timeout: '5m' },
          { run: 'true', image: 'alpine:3' },
        ],
        resources: { cpus: 1, memory: '512M', disk: '1G' },
        maxRuntime: '1h',
        maxAttempts: 2,
        network: 'none',
        repository: { url: 'https://example.com/repo.git', commit: 'main', shallow: true },
      },
    ];
  }
  if (def.url.endsWith('/dequeue')) {
    return [
      { executorName: 'fuzz-executor', version: '1', queues: [FUZZ_QUEUE], waitMs: 0, weights: { fuzz: 2 } },
      {
        executorName: 'fuzz-executor',
        version: '1',
        queues: [FUZZ_QUEUE],
        waitMs: 0,
        instanceId: 'fuzz-instance-1',
        heartbeatIntervalMs: 1_000,
        hostname: 'h',
      },
    ];
  }
  if (def.url.endsWith('/heartbeat')) {
    const beat = {
      executorName: 'fuzz-executor',
      hostname: 'h',
      os: 'linux',
      arch: 'x64',
      version: '1',
      runtime: 'shell',
      queues: [FUZZ_QUEUE],
      jobs: [{ id: 1, attempt: 1 }],
      waitMs: 0,
    };
    return [beat, { ...beat, instanceId: 'fuzz-instance-2', heartbeatIntervalMs: 5_000 }];
  }
  if (def.url.endsWith('/release')) return [{ executorName: 'fuzz-executor', instanceId: 'fuzz-instance-2' }];
  if (def.url.endsWith('/:id/logs') && def.method === 'POST') {
    return [
      {
        entries: [
          { index: 0, key: 'step.0', command: ['sh', '-c', 'echo'], startTime: now, offset: 0, out: 'hello\n' },
        ],
      },
    ];
  }
  if (def.url.endsWith('/complete')) return [{}];
  if (def.url.endsWith('/error')) return [{ message: 'fetch failed' }];
  if (def.url.endsWith('/fail')) return [{ message: 'exit 1', canceled: false }];
  return [];
}

interface Mutation {
  path: number[];
  op: 'delete' | 'replace' | 'add' | 'wrap' | 'stringify' | 'nullify';
  key: string;
  value: unknown;
}

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  path: fc.array(fc.nat(), { maxLength: 4 }),
  op: fc.constantFrom('delete', 'replace', 'add', 'wrap', 'stringify', 'nullify'),
  key: fc.oneof(anyString, fc.constantFrom('__proto__', 'constructor', 'waitMs', 'id', 'queue')),
  value: anyJson,
});

function applyMutation(root: unknown, m: Mutation): unknown {
  const clone = structuredClone(root);
  const holder = { root: clone as unknown };
  let parent: any = holder;
  let key: string | number = 'root';
  for (const step of m.path) {
    const node: unknown = parent[key];
    if (node === null || typeof node !== 'object') break;
    const keys: (string | number)[] = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    if (!keys.length) break;
    parent = node;
    key = keys[step % keys.length];
  }
  const node = parent[key];
  switch (m.op) {
    case 'delete':
      if (parent !== holder) {
        if (Array.isArray(parent)) parent.splice(Number(key), 1);
        else delete parent[key];
      }
      break;
    case 'replace':
      parent[key] = m.value;
      break;
    case 'add':
      if (node && typeof node === 'object' && !Array.isArray(node))
        Object.defineProperty(node, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
      else if (Array.isArray(node)) node.push(m.value);
      else parent[key] = { [m.key]: m.value };
      break;
    case 'wrap':
      parent[key] = [node];
      break;
    case 'stringify':
      parent[key] = JSON.stringify(node) ?? 'undefined';
      break;
    case 'nullify':
      parent[key] = null;
      break;
  }
  return holder.root;
}

function mutated(base: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc
    .tuple(base, fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
    .map(([value, mutations]) => mutations.reduce(applyMutation, value));
}

const JSON_TYPES = ['application/json', 'application/json; charset=utf-8', 'APPLICATION/JSON'];
const YAML_TYPES = ['application/yaml', 'application/x-yaml', 'text/yaml'];
const WRONG_TYPES = [
  'text/plain',
  'application/xml',
  'text/html',
  'multipart/form-data; boundary=x',
  'application/x-www-form-urlencoded',
  'application/octet-stream',
  'application/json; charset=utf-16',
  'application/jsonp',
  'application/yaml; charset=latin1',
  '*/*',
  ';;;',
  'application/',
  'json',
  'image/png',
];

const MALFORMED_TEXTS = [
  '',
  '{',
  '}',
  '[',
  '{"queue": ',
  '{"a":1,}',
  "{'a': 1}",
  'NaN',
  'undefined',
  '\ufeff{}',
  '{"a": 1e999}',
  '1'.repeat(400),
  '{"__proto__": {"polluted": true}}',
  '{"constructor": {"prototype": {"polluted": true}}}',
  '{"a":1}{"b":2}',
  'null',
  '"just a string"',
  '[]',
  '{"a":"\\ud800"}',
  '{"a":"\\u0000"}',
  '{"a": "x", "a": "y"}',
  '['.repeat(5000) + ']'.repeat(5000),
  '{"a":'.repeat(3000) + '1' + '}'.repeat(3000),
  '['.repeat(100000),
  // YAML: syntax errors, tabs, aliases (recursive and exponential), tags, complex keys, merges, several documents.
  'queue: [',
  'a:\tb',
  '\tqueue: x',
  'a: &a [*a]',
  'a: &x [1]\nb: *y',
  '? [a, b]\n: c',
  '<<: {queue: x}\nsteps: []',
  '--- a\n--- b',
  '%YAML 1.1\n---\nqueue: x',
  'a: !!binary aGk=',
  'a: !!js/function "() => 1"',
  'a: !custom x',
  '__proto__: {polluted: true}\nqueue: x',
  'queue: x\nsteps:\n  - run: |\n      echo hi\n    env: {A: [1,2]}',
  [...'abcdefghij']
    .map(
      (c, i) =>
        `${c}: &${c} [${
          i === 0
            ? '"lol"'
            : Array(9)
                .fill(`*${String.fromCharCode(c.charCodeAt(0) - 1)}`)
                .join(',')
        }]`,
    )
    .join('\n'),
  '- '.repeat(2000) + 'x',
  '{'.repeat(3000),
];

function bodyArb(def: AnyRoute): fc.Arbitrary<BodyPlan> {
  const schema = jsonSchemaOf(def.body);
  const seeds = knownSeeds(def);
  const shaped = schema ? fromSchema(schema, schema) : anyJson;
  const valid = seeds.length
    ? fc.oneof({ arbitrary: fc.constantFrom(...seeds), weight: 2 }, { arbitrary: shaped, weight: 1 })
    : shaped;
  const keys = schema ? schemaKeys(schema) : [];
  const rightKeys = keys.length
    ? fc.dictionary(fc.constantFrom(...keys), anyJson, { maxKeys: Math.min(keys.length, 6) })
    : fc.dictionary(anyString, anyJson, { maxKeys: 4 });
  const value = fc.oneof(
    { arbitrary: valid, weight: 3 },
    { arbitrary: mutated(valid), weight: 6 },
    { arbitrary: rightKeys, weight: 3 },
    { arbitrary: anyJson, weight: 2 },
  );
  const asJson = fc.record({
    kind: fc.constant('value' as const),
    value,
    as: fc.constant('json' as const),
    contentType: fc.constantFrom(...JSON_TYPES),
  });
  const asYaml = fc.record({
    kind: fc.constant('value' as const),
    value,
    as: fc.constant('yaml' as const),
    contentType: fc.constantFrom(...YAML_TYPES),
  });
  const truncated = fc.tuple(valid, fc.nat()).map(([v, cut]) => {
    const text = JSON.stringify(v) ?? '';
    return text.slice(0, text.length ? cut % text.length : 0);
  });
  const text = fc.record(
    {
      kind: fc.constant('text' as const),
      text: fc.oneof(
        fc.constantFrom(...MALFORMED_TEXTS),
        truncated,
        fc.string({ maxLength: 200 }),
        fc.string({ unit: 'binary', maxLength: 100 }),
      ),
      contentType: fc.oneof(fc.constantFrom(...JSON_TYPES, ...YAML_TYPES), fc.constant(undefined)),
    },
    { requiredKeys: ['kind', 'text'] },
  );
  const wrongType = fc.record({
    kind: fc.constant('value' as const),
    value: valid,
    as: fc.constantFrom('json' as const, 'yaml' as const),
    contentType: fc.oneof(fc.constantFrom(...WRONG_TYPES), headerText),
  });
  const huge = fc.record({
    kind: fc.constant('huge' as const),
    // Around the 1 MiB default, past it, and (rarely) past the 16 MiB of the largest routes.
    bytes: fc.oneof(
      { arbitrary: fc.constantFrom(200_000, 1_000_000, 1_100_000, 3_000_000), weight: 20 },
      { arbitrary: fc.constant(17 * 1024 * 1024), weight: 1 },
    ),
    into: valid,
    contentType: fc.constantFrom('application/json', 'application/yaml'),
  });
  // Deeply nested documents: parsers that recurse run out of stack (YAML.parse did, fatally: see yamlBody.ts).
  const deep = fc.record({
    kind: fc.constant('deep' as const),
    shape: fc.nat({ max: DEEP_SHAPES.length - 1 }),
    depth: fc.oneof(fc.integer({ min: 50, max: 500 }), fc.integer({ min: 2_000, max: 60_000 })),
    contentType: fc.constantFrom(...YAML_TYPES, ...YAML_TYPES, ...JSON_TYPES),
  });
  return fc.oneof(
    { arbitrary: deep, weight: 3 },
    { arbitrary: asJson, weight: 60 },
    { arbitrary: asYaml, weight: 10 },
    { arbitrary: text, weight: 15 },
    { arbitrary: wrongType, weight: 8 },
    { arbitrary: fc.constant({ kind: 'none' as const }), weight: 5 },
    { arbitrary: huge, weight: 1 },
  );
}

function queryArb(def: AnyRoute): fc.Arbitrary<string> {
  const schema = jsonSchemaOf(def.query);
  const shaped = schema ? fromSchema(schema, schema) : fc.constant({});
  const keys = schema ? Object.keys(schema.properties ?? {}) : [];
  const keyArb = keys.length ? fc.oneof(fc.constantFrom(...keys), anyString) : anyString;
  const valueArb = fc.oneof(
    anyString,
    anyNumber.map(String),
    fc.constantFrom('1', '0', '-1', '500', '501', '1e400', 'true'),
  );
  const fromObject = (obj: unknown): string => {
    const params = new URLSearchParams();
    if (obj && typeof obj === 'object')
      for (const [k, v] of Object.entries(obj)) params.append(k, typeof v === 'string' ? v : (JSON.stringify(v) ?? ''));
    const s = params.toString();
    return s ? `?${s}` : '';
  };
  const pairs = fc.array(fc.tuple(keyArb, valueArb), { maxLength: 4 }).map((list) => {
    const params = new URLSearchParams();
    for (const [k, v] of list) params.append(k, v);
    const s = params.toString();
    return s ? `?${s}` : '';
  });
  const raw = fc.constantFrom(
    '?',
    '?%',
    '?a=%E0%A4%A',
    '?&&&',
    '?a[b]=1',
    '?__proto__[x]=1',
    '?limit=1e400&limit=2',
    '?attempt=',
    '?state=queued&state=failed',
    '?=x',
    '?%00=%00',
  );
  return fc.oneof(
    { arbitrary: fc.constant(''), weight: 4 },
    { arbitrary: shaped.map(fromObject), weight: 4 },
    { arbitrary: pairs, weight: 3 },
    { arbitrary: raw, weight: 1 },
  );
}

function paramArb(): fc.Arbitrary<ParamPlan> {
  return fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('job' as const), pick: fc.nat() }), weight: 6 },
    {
      arbitrary: fc.record({
        kind: fc.constant('literal' as const),
        value: fc.oneof(
          fc.integer({ min: -5, max: 100_000 }).map(String),
          fc.constantFrom(
            '0',
            '-1',
            '1.5',
            '1e3',
            '0x10',
            '99999999999999999999',
            'NaN',
            'admin',
            'global',
            'user:admin',
            'org:acme',
            'A_SECRET',
          ),
          fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
          anyString,
        ),
      }),
      weight: 3,
    },
    {
      arbitrary: fc.record({
        kind: fc.constant('raw' as const),
        value: fc.constantFrom('%', '%zz', '%00', '..', '.', '%2e%2e', '%2F', 'a%20b', '🙂', 'x'.repeat(150)),
      }),
      weight: 1,
    },
  );
}

function authArb(): fc.Arbitrary<AuthPlan> {
  const garbage = fc.oneof(
    fc.constantFrom(
      '',
      'Bearer',
      'Bearer ',
      'bearer',
      'Basic dXNlcjpwYXNz',
      'token-executor',
      'token-executor wrong',
      'Bearer dha_nope',
      'Bearer null',
      `Bearer ${FUZZ_ADMIN_TOKEN}x`,
      `Bearer ${FUZZ_ADMIN_TOKEN.slice(0, -1)}`,
      `token-executor ${FUZZ_EXECUTORS_TOKEN}0`,
      `Bearer ${'a'.repeat(10_000)}`,
      `bearer ${FUZZ_ADMIN_TOKEN}`,
      `BEARER  ${FUZZ_ADMIN_TOKEN}  `,
      `Bearer ${FUZZ_EXECUTORS_TOKEN}`,
      `token-executor ${FUZZ_ADMIN_TOKEN}`,
    ),
    headerText,
    headerText.map((s) => `Bearer ${s}`),
  );
  return fc.oneof(
    { arbitrary: fc.constant({ kind: 'valid' as const }), weight: 85 },
    { arbitrary: fc.constant({ kind: 'none' as const }), weight: 4 },
    { arbitrary: fc.record({ kind: fc.constant('header' as const), value: garbage }), weight: 7 },
    {
      arbitrary: fc.record({
        kind: fc.constant('other' as const),
        which: fc.constantFrom('admin' as const, 'executor' as const, 'job' as const),
      }),
      weight: 4,
    },
  );
}

/** A few addresses send many requests (and get blocked now and then by the auth-failure limiter); most are rare. */
const FREQUENT_REMOTES = [
  '10.1.0.1',
  '10.1.0.2',
  '127.0.0.1',
  '::1',
  '::ffff:10.1.0.1',
  '2001:db8::1',
  '2001:db8::2',
  '2001:db8:0:1::1',
];
const remoteArb = fc.oneof(
  { arbitrary: fc.constantFrom(...FREQUENT_REMOTES), weight: 1 },
  {
    arbitrary: fc
      .tuple(fc.integer({ min: 2, max: 254 }), fc.integer({ min: 1, max: 254 }))
      .map(([a, b]) => `10.2.${a}.${b}`),
    weight: 4,
  },
  { arbitrary: fc.integer({ min: 1, max: 0xffff }).map((n) => `2001:db8:${n.toString(16)}::1`), weight: 1 },
);

export function requestArb(def: AnyRoute): fc.Arbitrary<RequestPlan> {
  const paramCount = (def.url.match(/:[A-Za-z0-9_]+/g) ?? []).length;
  const otherMethods = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'].filter((m) => m !== def.method);
  return fc.record({
    method: fc.oneof(
      { arbitrary: fc.constant(def.method as string), weight: 19 },
      { arbitrary: fc.constantFrom(...otherMethods), weight: 1 },
    ),
    params: fc.array(paramArb(), { minLength: paramCount, maxLength: paramCount }),
    query: queryArb(def),
    auth: authArb(),
    attemptPick: fc.nat(),
    body:
      def.body || def.method !== 'GET'
        ? bodyArb(def)
        : fc.oneof(
            { arbitrary: fc.constant({ kind: 'none' as const }), weight: 9 },
            { arbitrary: bodyArb(def), weight: 1 },
          ),
    remote: remoteArb,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Sending and checking

function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Any waitMs anywhere becomes 0, so dequeue and heartbeat answer at once; on a route whose body has a waitMs, a
 * body object without one gets waitMs: 0 too (its default would hold the request).
 */
function noWaiting(value: unknown, routeWaits: boolean, depth = 0): unknown {
  if (depth > 50 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => noWaiting(v, false, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) setOwn(out, k, k === 'waitMs' ? 0 : noWaiting(v, false, depth + 1));
  if (routeWaits && depth === 0) setOwn(out, 'waitMs', 0);
  return out;
}

/** The same for a text body: one that parses as JSON or YAML into an object is written again with waitMs: 0. */
function noWaitingText(text: string, routeWaits: boolean): string {
  if (!routeWaits) return text;
  let parsed: unknown;
  let json = true;
  try {
    parsed = JSON.parse(text);
  } catch {
    json = false;
    // As the server does: a deeply nested document would crash YAML.parse (see src/server/yamlBody.ts).
    if (yamlNestingProblem(text)) return text;
    try {
      parsed = YAML.parse(text, { logLevel: 'error' });
    } catch {
      return text;
    }
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return text;
  const fixed = noWaiting(parsed, true);
  return json ? JSON.stringify(fixed) : YAML.stringify(fixed);
}

const waitingRoutes = new WeakMap<AnyRoute, boolean>();
function routeWaits(def: AnyRoute): boolean {
  let waits = waitingRoutes.get(def);
  if (waits === undefined) waitingRoutes.set(def, (waits = Boolean(jsonSchemaOf(def.body)?.properties?.waitMs)));
  return waits;
}

const hugeCache = new Map<number, string>();
function hugeString(bytes: number): string {
  let s = hugeCache.get(bytes);
  if (!s) hugeCache.set(bytes, (s = 'x'.repeat(bytes)));
  return s;
}

function isStreamRoute(def: AnyRoute): boolean {
  return def.response === 'text/event-stream' || def.url.endsWith('/stream');
}

interface Sent {
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string;
  remoteAddress: string;
}

function resolve(def: AnyRoute, plan: RequestPlan, state: FuzzState): Sent {
  const stream = isStreamRoute(def);
  const attempt = state.attempts.length ? state.attempts[plan.attemptPick % state.attempts.length] : undefined;
  const useAttempt = def.auth === 'job' && attempt !== undefined && plan.auth.kind === 'valid';
  const existing = (pick: number): string => {
    if (stream) return String(state.reservedJobId);
    return String(state.jobIds.length ? state.jobIds[pick % state.jobIds.length] : 1);
  };
  let index = 0;
  const url =
    def.url.replace(/:[A-Za-z0-9_]+/g, (name) => {
      const p = plan.params[index++];
      if (useAttempt && name === ':id') return String(attempt.id);
      if (!p) return 'x';
      if (p.kind === 'job') return existing(p.pick);
      if (p.kind === 'raw') return p.value;
      // A stream on a job still running would wait for it to finish: streams name only the finished reserved job.
      const asNumber = Number(p.value);
      if (Number.isFinite(asNumber) && p.value.trim() !== '') {
        if (stream && asNumber !== state.reservedJobId)
          return String(10_000_000 + Math.abs(Math.trunc(asNumber) % 1000));
        if (!stream && asNumber === state.reservedJobId) return String(state.reservedJobId + 10_000_000);
      }
      // encodeURIComponent throws on a lone surrogate, which no client could send in a URL anyway.
      return (
        encodeURIComponent(
          p.value.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'),
        ) || 'x'
      );
    }) + plan.query;

  const headers: Record<string, string> = {};
  const validFor: Record<string, string | undefined> = {
    client: `Bearer ${state.adminToken}`,
    executor: `token-executor ${FUZZ_EXECUTORS_TOKEN}`,
    job: attempt && `Bearer ${attempt.token}`,
    public: undefined,
  };
  switch (plan.auth.kind) {
    case 'valid':
      if (validFor[def.auth]) headers.authorization = validFor[def.auth]!;
      else if (def.auth !== 'public') headers.authorization = `Bearer ${state.adminToken}`;
      break;
    case 'header':
      headers.authorization = plan.auth.value;
      break;
    case 'other': {
      const other = {
        admin: `Bearer ${state.adminToken}`,
        executor: `token-executor ${FUZZ_EXECUTORS_TOKEN}`,
        job: attempt && `Bearer ${attempt.token}`,
      }[plan.auth.which];
      if (other) headers.authorization = other;
      break;
    }
    case 'none':
      break;
  }

  let payload: string | undefined;
  const body = plan.body;
  const waits = routeWaits(def);
  if (body.kind === 'value') {
    const value = noWaiting(body.value, waits);
    payload = body.as === 'json' ? (JSON.stringify(value) ?? 'null') : YAML.stringify(value);
    headers['content-type'] = body.contentType;
  } else if (body.kind === 'text') {
    payload = noWaitingText(body.text, waits);
    if (body.contentType !== undefined) headers['content-type'] = body.contentType;
  } else if (body.kind === 'deep') {
    payload = DEEP_SHAPES[body.shape](body.depth);
    headers['content-type'] = body.contentType;
  } else if (body.kind === 'huge') {
    const into = noWaiting(body.into, waits);
    const value =
      into && typeof into === 'object' && !Array.isArray(into)
        ? { ...into, huge: hugeString(body.bytes) }
        : { huge: hugeString(body.bytes), into };
    payload = body.contentType === 'application/json' ? JSON.stringify(value) : YAML.stringify(value, { lineWidth: 0 });
    headers['content-type'] = body.contentType;
  }
  return { method: plan.method, url, headers, payload, remoteAddress: plan.remote };
}

function describeSent(sent: Sent): string {
  const payload =
    sent.payload === undefined
      ? '(no body)'
      : sent.payload.length > 600
        ? `${sent.payload.slice(0, 600)}... (${sent.payload.length} chars)`
        : sent.payload;
  return `${sent.method} ${sent.url.slice(0, 300)} from ${sent.remoteAddress}\nheaders: ${JSON.stringify(sent.headers).slice(0, 300)}\nbody: ${payload}`;
}

class FuzzFailure extends Error {}
class RequestTimeout extends FuzzFailure {}

function check(def: AnyRoute, sent: Sent, status: number, headers: Record<string, unknown>, text: string): void {
  const fail = (why: string): never => {
    throw new FuzzFailure(
      `${why}\nroute: ${def.method} ${def.url}\nrequest: ${describeSent(sent)}\nanswer: ${status} ${text.slice(0, 800)}`,
    );
  };
  if (status >= 500) fail(`answered ${status}`);
  if (headers['x-content-type-options'] !== 'nosniff') fail('no X-Content-Type-Options: nosniff');
  if (!headers['content-security-policy']) fail('no Content-Security-Policy');
  if (!headers['cache-control']) fail('no Cache-Control');
  if (status >= 400 && sent.method !== 'HEAD') {
    if (!String(headers['content-type'] ?? '').startsWith('application/json'))
      fail(`a ${status} answer that is not JSON`);
    let body: any;
    try {
      body = JSON.parse(text);
    } catch {
      fail(`a ${status} answer whose body does not parse as JSON`);
    }
    if (typeof body?.error !== 'string' || body.error.trim() === '')
      fail(`a ${status} answer without a non-empty "error" string`);
    const validation = status === 400 && /^invalid /.test(body.error);
    if (validation || body.issues !== undefined) {
      if (!Array.isArray(body.issues) || body.issues.length === 0) fail('a validation 400 without "issues"');
      for (const issue of body.issues) {
        if (
          typeof issue?.field !== 'string' ||
          issue.field === '' ||
          typeof issue?.message !== 'string' ||
          issue.message === ''
        ) {
          fail(`an issue that names no field or has no message: ${JSON.stringify(issue)}`);
        }
      }
    }
    if (status === 429 && !headers['retry-after']) fail('a 429 without Retry-After');
  }
}

function learn(def: AnyRoute, sent: Sent, status: number, text: string, state: FuzzState): void {
  if (status === 201 && def.method === 'POST' && def.url === '/api/v1/jobs') {
    try {
      const id = (JSON.parse(text) as { job?: { id?: unknown } }).job?.id;
      if (typeof id === 'number') {
        state.jobIds.push(id);
        if (state.jobIds.length > 500) state.jobIds.shift();
      }
    } catch {
      // checked elsewhere
    }
  }
  if (status === 200 && def.url.endsWith('/dequeue') && sent.method === 'POST') {
    try {
      remember(state, JSON.parse(text));
    } catch {
      // checked elsewhere
    }
  }
  if (status === 409 && def.auth === 'job') {
    const token = sent.headers.authorization?.replace(/^Bearer /, '');
    state.attempts = state.attempts.filter((a) => a.token !== token);
  }
}

async function send(target: FuzzTarget, def: AnyRoute, plan: RequestPlan, stats: FuzzStats): Promise<void> {
  const sent = resolve(def, plan, target.state);
  if (process.env.FUZZ_TRACE) writeSync(2, `fuzz> ${describeSent(sent).slice(0, 400)}\n`);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new RequestTimeout(
            `no answer within ${REQUEST_TIMEOUT_MS} ms\nroute: ${def.method} ${def.url}\nrequest: ${describeSent(sent)}`,
          ),
        ),
      REQUEST_TIMEOUT_MS,
    );
  });
  try {
    const res = await Promise.race([
      target.app.inject({
        method: sent.method as 'GET',
        url: sent.url,
        headers: sent.headers,
        payload: sent.payload,
        remoteAddress: sent.remoteAddress,
      }),
      timeout,
    ]);
    stats.requests++;
    stats.byStatus[res.statusCode] = (stats.byStatus[res.statusCode] ?? 0) + 1;
    const routeKey = `${def.method} ${def.url}`;
    stats.byRoute[routeKey] = (stats.byRoute[routeKey] ?? 0) + 1;
    check(def, sent, res.statusCode, res.headers, res.body);
    learn(def, sent, res.statusCode, res.body, target.state);
  } finally {
    clearTimeout(timer);
  }
}

export interface FuzzRunOptions {
  /** Generated requests in all, spread evenly over the routes. */
  requests: number;
  seed?: number;
  /** Called after each route with its share done. */
  progress?: (done: number, route: string) => void;
}

/**
 * Fuzzes every route of the target; throws (with fast-check's shrunk counterexample and seed) on the first request
 * that breaks a rule, or at the end on an unhandled rejection, an error in the log, or a credential in the log.
 */
export async function fuzzRoutes(target: FuzzTarget, options: FuzzRunOptions): Promise<FuzzStats> {
  const stats: FuzzStats = { requests: 0, elapsedMs: 0, byStatus: {}, byRoute: {} };
  const crashes: unknown[] = [];
  const onCrash = (err: unknown): void => {
    crashes.push(err);
  };
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
  const started = Date.now();
  const perRoute = Math.ceil(options.requests / target.routes.length);
  try {
    for (const def of target.routes) {
      let sinceReplenish = 0;
      // A request left hanging stays so: shrinking would only pile up more. Report the first one as it was.
      let hung: Error | undefined;
      await fc.assert(
        fc.asyncProperty(requestArb(def), async (plan) => {
          if (hung) return;
          if (++sinceReplenish >= 100 || target.state.attempts.length < 2) {
            sinceReplenish = 0;
            await replenish(target);
          }
          try {
            await send(target, def, plan, stats);
          } catch (err) {
            if (err instanceof RequestTimeout) hung = err;
            throw err;
          }
        }),
        { numRuns: perRoute, seed: options.seed },
      );
      options.progress?.(stats.requests, `${def.method} ${def.url}`);
    }
  } finally {
    process.off('unhandledRejection', onCrash);
    process.off('uncaughtException', onCrash);
    stats.elapsedMs = Date.now() - started;
  }
  if (crashes.length)
    throw new Error(
      `unhandled rejections or exceptions during the fuzz run:\n${crashes.map((c) => (c as Error)?.stack ?? String(c)).join('\n')}`,
    );
  const errors = target.logLines.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
  if (errors.length) throw new Error(`errors were logged during the fuzz run:\n${errors.slice(0, 5).join('\n')}`);
  for (const secret of target.state.secrets) {
    const line = target.logLines.find((l) => l.includes(secret));
    if (line) throw new Error(`a credential reached the log: ${line.slice(0, 500)}`);
  }
  return stats;
}
