// Proves the Docker, registry and metadata test helpers work on this machine before other tests rely on them.
import { readFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { DOCKER_TEST_IMAGE, DOCKER_TEST_USER_IMAGE, docker, ensureTestImages, imageExists } from '../support/docker.js';
import { METADATA_IP, startFakeMetadataServer } from '../support/metadata.js';
import { startRegistry, type RegistryHandle } from '../support/registry.js';

const imageId = async (ref: string): Promise<string> =>
  (await docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();

describe('test images', () => {
  it('ensureTestImages is idempotent', async () => {
    await ensureTestImages();
    const before = [await imageId(DOCKER_TEST_IMAGE), await imageId(DOCKER_TEST_USER_IMAGE)];
    // Two callers at once (as two workers would be) and then one more: nothing is rebuilt.
    await Promise.all([ensureTestImages(), ensureTestImages()]);
    await ensureTestImages();
    expect([await imageId(DOCKER_TEST_IMAGE), await imageId(DOCKER_TEST_USER_IMAGE)]).toEqual(before);
  });

  it('runs busybox', async () => {
    const r = await docker(['run', '--rm', '--network', 'none', DOCKER_TEST_IMAGE, 'echo', 'hi']);
    expect(r.stdout).toBe('hi\n');
  });

  it('has a user app (1000:1000, home /home/app owned by it) and runs as root by default', async () => {
    const script = 'id -u; id -g; echo $HOME; stat -c %u:%g /home/app';
    const asApp = await docker([
      'run',
      '--rm',
      '--network',
      'none',
      '--user',
      'app',
      DOCKER_TEST_USER_IMAGE,
      'sh',
      '-c',
      script,
    ]);
    expect(asApp.stdout).toBe('1000\n1000\n/home/app\n1000:1000\n');
    const byDefault = await docker(['run', '--rm', '--network', 'none', DOCKER_TEST_USER_IMAGE, 'id', '-u']);
    expect(byDefault.stdout).toBe('0\n');
  });

  it('runs under gVisor with runsc (its own kernel, not the host one)', async () => {
    const r = await docker([
      'run',
      '--rm',
      '--runtime',
      'runsc',
      '--network',
      'none',
      DOCKER_TEST_IMAGE,
      'cat',
      '/proc/version',
    ]);
    const host = await readFile('/proc/version', 'utf8');
    expect(r.stdout.trim()).not.toBe('');
    expect(r.stdout).not.toBe(host);
  });
});

describe('registry', () => {
  let registry: RegistryHandle | undefined;
  afterAll(async () => {
    await registry?.stop();
  });

  it('asks for credentials, takes a push, and leaves no copy in the engine', async () => {
    registry = await startRegistry({ user: 'tester', password: 's3cret-pass' });
    expect(registry.host).toMatch(/^127\.0\.0\.1:\d+$/);
    expect((await fetch(`http://${registry.host}/v2/`)).status).toBe(401);
    const wrong = await fetch(`http://${registry.host}/v2/`, {
      headers: { authorization: `Basic ${Buffer.from('tester:wrong').toString('base64')}` },
    });
    expect(wrong.status).toBe(401);

    const ref = await registry.push(DOCKER_TEST_IMAGE, 'dockhand/busybox:pushed');
    expect(ref).toBe(`${registry.host}/dockhand/busybox:pushed`);
    expect(await imageExists(ref)).toBe(false);
    expect(await imageExists(DOCKER_TEST_IMAGE)).toBe(true);

    const auth = { authorization: `Basic ${Buffer.from('tester:s3cret-pass').toString('base64')}` };
    const tags = await fetch(`http://${registry.host}/v2/dockhand/busybox/tags/list`, { headers: auth });
    expect(tags.status).toBe(200);
    expect(await tags.json()).toEqual({ name: 'dockhand/busybox', tags: ['pushed'] });
  });
});

describe('fake metadata server', () => {
  const onLo = (): boolean =>
    execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).includes(` ${METADATA_IP}/`);

  it('answers on 169.254.169.254 from this machine, for the host and for containers', async () => {
    const hadAddress = onLo();
    const server = await startFakeMetadataServer();
    try {
      expect(onLo()).toBe(true);
      const res = await fetch(`${server.url}/latest/meta-data/`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('fake-metadata\n');
      // A container on Docker's default bridge is answered by the host too: the address is local.
      // (`timeout`, not wget -T, which crashes this busybox's wget.)
      const r = await docker([
        'run',
        '--rm',
        DOCKER_TEST_IMAGE,
        'timeout',
        '5',
        'wget',
        '-q',
        '-O',
        '-',
        `${server.url}/`,
      ]);
      expect(r.stdout).toBe('fake-metadata\n');
    } finally {
      await server.stop();
    }
    // Never probed after stop(): without the address, 169.254.169.254 routes off this machine.
    expect(onLo()).toBe(hadAddress);
  });
});
