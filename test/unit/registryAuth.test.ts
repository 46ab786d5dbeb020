// Which credential an image pull uses: the job's, then the executor's, then the user's docker config, per registry.
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  credentialFor,
  normalizeRegistry,
  registryOf,
  secretsOf,
  staticDockerAuthConfigInput,
} from '../../src/core/dockerAuthConfig.js';
import { ConfigError, readEnv } from '../../src/core/envConfig.js';
import { chooseCredential } from '../../src/executor/runtimes/docker/registryAuth.js';
import { withDefaultTag } from '../../src/executor/runtimes/docker/imagePuller.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('image references', () => {
  it('name their registry the way Docker reads them', () => {
    expect(registryOf('alpine')).toBe('docker.io');
    expect(registryOf('library/alpine:3')).toBe('docker.io');
    expect(registryOf('127.0.0.1:5000/app:1')).toBe('127.0.0.1:5000');
    expect(registryOf('Registry.Example.com/team/app@sha256:abc')).toBe('registry.example.com');
    expect(registryOf('localhost/app')).toBe('localhost');
    expect(normalizeRegistry('https://index.docker.io/v1/')).toBe('docker.io');
    expect(normalizeRegistry('http://127.0.0.1:5000/')).toBe('127.0.0.1:5000');
  });

  it('get :latest when they have no tag, and keep tags and digests', () => {
    expect(withDefaultTag('alpine')).toBe('alpine:latest');
    expect(withDefaultTag('127.0.0.1:5000/app')).toBe('127.0.0.1:5000/app:latest');
    expect(withDefaultTag('127.0.0.1:5000/app:2')).toBe('127.0.0.1:5000/app:2');
    expect(withDefaultTag('app@sha256:0123')).toBe('app@sha256:0123');
  });
});

describe('registry credentials', () => {
  it('decode "auth", and prefer identity tokens', () => {
    expect(
      credentialFor({ auths: { 'https://reg.example.com/': { auth: b64('ci:pa:ss') } } }, 'reg.example.com'),
    ).toEqual({
      username: 'ci',
      password: 'pa:ss',
      serveraddress: 'reg.example.com',
    });
    expect(
      credentialFor({ auths: { 'reg.example.com': { identitytoken: 'tok', username: 'x' } } }, 'reg.example.com'),
    ).toEqual({
      identitytoken: 'tok',
      serveraddress: 'reg.example.com',
    });
    expect(credentialFor({ auths: { other: { auth: b64('a:b') } } }, 'reg.example.com')).toBeUndefined();
  });

  it('list every secret in a config, for redaction', () => {
    expect(
      secretsOf({ auths: { r: { auth: b64('ci:hunter2') }, s: { username: 'u', password: 'pw' } } }).sort(),
    ).toEqual([b64('ci:hunter2'), 'hunter2', 'pw'].sort());
  });

  it('come from the job first, then EXECUTOR_DOCKER_AUTH_CONFIG, then the user config, per registry', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'dockhand-auth-'));
    await writeFile(
      path.join(dir, 'config.json'),
      JSON.stringify({ auths: { 'reg.a': { auth: b64('user:u') }, 'reg.c': { auth: b64('user:u') } } }),
    );
    const job = { auths: { 'reg.a': { auth: b64('job:j') } } };
    const executor = { auths: { 'reg.a': { auth: b64('exec:e') }, 'reg.b': { auth: b64('exec:e') } } };
    const pick = (image: string) => chooseCredential(image, { job, executor, userConfigDir: dir });
    expect(await pick('reg.a/app')).toMatchObject({
      source: "the job's DOCKER_AUTH_CONFIG",
      auth: { username: 'job' },
    });
    expect(await pick('reg.b/app')).toMatchObject({
      source: 'EXECUTOR_DOCKER_AUTH_CONFIG',
      auth: { username: 'exec' },
    });
    expect(await pick('reg.c/app')).toMatchObject({
      source: path.join(dir, 'config.json'),
      auth: { username: 'user' },
    });
    expect(await pick('reg.d/app')).toEqual({ registry: 'reg.d', source: 'no credentials (anonymous pull)' });
  });

  it('from a job or the environment hold no credential helpers, and a bad value is named without being repeated', () => {
    expect(staticDockerAuthConfigInput.safeParse({ credsStore: 'desktop' }).success).toBe(false);
    expect(staticDockerAuthConfigInput.safeParse(JSON.stringify({ auths: { r: { auth: 'eA==' } } })).success).toBe(
      true,
    );
    const read = (value: string) => () =>
      readEnv(
        { EXECUTOR_DOCKER_AUTH_CONFIG: value },
        'EXECUTOR_DOCKER_AUTH_CONFIG',
        staticDockerAuthConfigInput,
        undefined,
        { secret: true },
      );
    expect(read('{"auths": {"r": {"pasword": "hunter2"}}}')).toThrow(ConfigError);
    expect(read('{"auths": {"r": {"pasword": "hunter2"}}}')).toThrow(
      /EXECUTOR_DOCKER_AUTH_CONFIG auths\.r: needs "auth"/,
    );
    expect(read('{"auths": {"r": {"pasword": "hunter2"}}}')).not.toThrow(/hunter2/);
    expect(read('not json hunter2')).toThrow(/is not valid JSON/);
    expect(read('not json hunter2')).not.toThrow(/hunter2/);
  });
});
