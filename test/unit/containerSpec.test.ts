// The exact container a step becomes, and the `docker run` line its log shows.
import { describe, expect, it } from 'vitest';
import {
  containerOptions,
  describeContainer,
  type StepContainer,
} from '../../src/executor/runtimes/docker/containerSpec.js';

const step: StepContainer = {
  name: 'dockhand-7-1-2-abc123',
  image: 'registry.example.com/tools/build:1.4',
  executorName: 'exec-a',
  jobId: 7,
  attempt: 1,
  stepKey: 'compile',
  workspace: '/var/tmp/job-7/workspace',
  scripts: '/var/tmp/job-7/scripts',
  scriptName: 'step-2.sh',
  dir: 'src/app',
  env: { CI: 'true', API_KEY: 'sup3r-s3cret' },
  user: '1000:1000',
  limits: { cpus: 1.5, memoryBytes: 512 * 2 ** 20, diskBytes: 0 },
  pidsLimit: 4096,
  network: 'dockhand',
  ociRuntime: 'runsc',
};

describe('step containers', () => {
  it('are made with the workspace, limits, labels and no privileges', () => {
    expect(containerOptions(step)).toEqual({
      name: 'dockhand-7-1-2-abc123',
      Image: 'registry.example.com/tools/build:1.4',
      Entrypoint: ['/bin/sh'],
      Cmd: ['-e', '/dockhand/step-2.sh'],
      WorkingDir: '/data/src/app',
      Env: ['CI=true', 'API_KEY=sup3r-s3cret'],
      User: '1000:1000',
      Labels: {
        'dev.dockhand.executor': 'exec-a',
        'dev.dockhand.job': '7',
        'dev.dockhand.attempt': '1',
        'dev.dockhand.step': 'compile',
      },
      AttachStdin: false,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      OpenStdin: false,
      HostConfig: {
        Mounts: [
          { Type: 'bind', Source: '/var/tmp/job-7/workspace', Target: '/data' },
          { Type: 'bind', Source: '/var/tmp/job-7/scripts', Target: '/dockhand', ReadOnly: true },
        ],
        NetworkMode: 'dockhand',
        Privileged: false,
        CapDrop: ['NET_RAW'],
        SecurityOpt: ['no-new-privileges'],
        PidsLimit: 4096,
        NanoCpus: 1_500_000_000,
        Memory: 536_870_912,
        MemorySwap: 536_870_912,
        Init: true,
        LogConfig: { Type: 'none', Config: {} },
        Runtime: 'runsc',
      },
    });
  });

  it('leave CPU and memory unbounded at 0, and the image user and engine runtime at their defaults', () => {
    const o = containerOptions({
      ...step,
      limits: { cpus: 0, memoryBytes: 0, diskBytes: 0 },
      user: undefined,
      ociRuntime: '',
      dir: '.',
      network: 'none',
    });
    expect(o.HostConfig).toMatchObject({ NanoCpus: 0, Memory: 0, MemorySwap: 0, NetworkMode: 'none' });
    expect(o.HostConfig).not.toHaveProperty('Runtime');
    expect(o.User).toBe('');
    expect(o.WorkingDir).toBe('/data');
  });

  it('show as a docker run line that names environment variables but never their values', () => {
    const line = describeContainer(step);
    expect(line.join(' ')).toBe(
      'docker run --rm --init --runtime runsc --network dockhand --cap-drop NET_RAW --security-opt no-new-privileges --pids-limit 4096 ' +
        '--cpus 1.5 --memory 536870912 --user 1000:1000 -v /var/tmp/job-7/workspace:/data -v /var/tmp/job-7/scripts:/dockhand:ro ' +
        '-w /data/src/app -e CI -e API_KEY --entrypoint /bin/sh registry.example.com/tools/build:1.4 -e /dockhand/step-2.sh',
    );
    expect(line.join(' ')).not.toContain('sup3r-s3cret');
  });
});
