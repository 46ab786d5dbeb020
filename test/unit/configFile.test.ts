// The server's config file: YAML checked in full at start, errors naming the key and the fix, the environment over
// the file, and the build planes in Quay's shape.
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/core/envConfig.js';
import { loadConfigFile, withFileSettings } from '../../src/server/configFile.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'dockhand-config-'));
function file(text: string): string {
  const f = path.join(dir, `c${Math.random().toString(16).slice(2)}.yaml`);
  writeFileSync(f, text);
  return f;
}
const problem = (text: string): string => {
  try {
    loadConfigFile(file(text), {});
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error('accepted');
};

describe('the config file', () => {
  it('is optional: without one there are no build planes and Quay-like defaults', () => {
    const config = loadConfigFile(undefined, {});
    expect(config.builds).toMatchObject({
      ALLOWED_WORKER_COUNT: 1,
      MAX_TRIES: 3,
      HEARTBEAT_TIMEOUT: 60,
      EXECUTORS: [],
    });
  });

  it('reads Quay-shaped planes in order, with their defaults', () => {
    const config = loadConfigFile(
      file(`builds:
  ALLOWED_WORKER_COUNT: 2
  EXECUTORS:
    - EXECUTOR: kubernetes
      NAME: cluster-a
      SERVER_URL: http://dockhand.svc:7070
      WORKER_IMAGE: registry.example.com/dockhand/build-worker
      MINIMUM_RETRY_THRESHOLD: 1
    - EXECUTOR: docker
      NAME: local-gvisor
      DOCKER_RUNTIME: runsc-net
`),
      {},
    );
    expect(config.builds.EXECUTORS.map((p) => [p.EXECUTOR, p.NAME, p.SETUP_TIME])).toEqual([
      ['kubernetes', 'cluster-a', 180],
      ['docker', 'local-gvisor', 180],
    ]);
  });

  it('names the key and what is wrong', () => {
    expect(problem('builds:\n  EXECUTORS:\n    - EXECUTOR: docker\n      NAME: a\n      SETUP_TIM: 3\n')).toMatch(
      /builds\.EXECUTORS\[0\].*SETUP_TIM/,
    );
    expect(problem('builds:\n  ALLOWED_WORKER_COUNT: 0\n')).toMatch(/builds\.ALLOWED_WORKER_COUNT/);
    expect(problem('builds:\n  EXECUTORS:\n    - EXECUTOR: ec2\n      NAME: a\n')).toMatch(
      /builds\.EXECUTORS\[0\]\.EXECUTOR/,
    );
    expect(
      problem('builds:\n  EXECUTORS:\n    - {EXECUTOR: process, NAME: a}\n    - {EXECUTOR: process, NAME: a}\n'),
    ).toMatch(/NAME.*used twice/);
    expect(problem('builds:\n  EXECUTORS:\n    - {EXECUTOR: kubernetes, NAME: k}\n')).toMatch(
      /WORKER_IMAGE: name the worker image in your registry/,
    );
    expect(
      problem('builds:\n  EXECUTORS:\n    - {EXECUTOR: kubernetes, NAME: k, WORKER_IMAGE: r.example.com/w}\n'),
    ).toMatch(/SERVER_URL/);
    expect(problem('builds: [unclosed\n')).toMatch(/not valid YAML/);
    expect(problem('- a list\n')).toMatch(/must be a mapping/);
  });

  it('keeps secrets out of it, and lets the environment win over its settings', () => {
    expect(problem('DOCKHAND_EXECUTORS_ACCESS_TOKEN: abc\n')).toMatch(/may not be set in the config file/);
    const config = loadConfigFile(file('DOCKHAND_PORT: 7171\nDOCKHAND_LOG_LEVEL: debug\n'), {});
    expect(withFileSettings({ DOCKHAND_PORT: '8080' }, config)).toMatchObject({
      DOCKHAND_PORT: '8080',
      DOCKHAND_LOG_LEVEL: 'debug',
    });
  });

  it('says which file could not be read', () => {
    expect(() => loadConfigFile(path.join(dir, 'missing.yaml'), {})).toThrow(
      /--config .*missing\.yaml: cannot read the config file \(ENOENT\)/,
    );
    expect(() => loadConfigFile(undefined, { DOCKHAND_CONFIG: path.join(dir, 'missing.yaml') })).toThrow(
      /DOCKHAND_CONFIG=/,
    );
  });
});
