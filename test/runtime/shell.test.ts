// The runtime contract on the shell runtime (no Docker needed: the fast lane runs it).
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import pino from 'pino';
import { create } from '../../src/executor/runtimes/shell/index.js';
import { loadRuntimeSettings } from '../../src/executor/runtimes/settings.js';
import { tempDir } from '../support/processes.js';
import { runtimeContract } from './contract.js';

const root = await tempDir('runtime-shell');
const log = pino({ level: 'silent' });

runtimeContract('shell', {
  make: async (env = {}) =>
    create(
      loadRuntimeSettings({
        EXECUTOR_RUNTIME: 'shell',
        EXECUTOR_NAME: 'contract-shell',
        EXECUTOR_WORKSPACE_ROOT: root,
        ...env,
      }),
      {},
      log,
    ),
  hostAddress: async () => '127.0.0.1',
  // Steps are host processes: nothing about a step keeps it from starting but its own dir (in the common part).
  startErrors: [],
  leftovers: async (executorName) =>
    (await readdir(path.join(root, `dockhand-${executorName}`)).catch(() => [])).filter((n) => n.startsWith('job-')),
});
