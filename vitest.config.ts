import { defineConfig } from 'vitest/config';

/**
 * The fast lane (`npm run test:unit`): no Docker, PostgreSQL or browser, so no global setup. Shell runtime tests
 * use git and sshd from the host, as the shell runtime does.
 */
const UNIT = [
  'test/unit/**/*.test.ts',
  'test/agent/**/*.test.ts',
  'test/runtime/shell.test.ts',
  'test/store/sqlite.test.ts',
  'test/store/rotation.test.ts',
  // kubectl alone renders and the schema checks the kustomize installation: no cluster, no Docker.
  'test/kubernetes/deploy.test.ts',
];

export default defineConfig({
  test: {
    // End-to-end tests start real server and executor processes; give them room on a 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT } },
      {
        extends: true,
        test: {
          name: 'services',
          include: ['test/**/*.test.ts'],
          exclude: UNIT,
          // Builds the local Docker test images once (they cannot be pulled here) and starts the run's PostgreSQL;
          // fails fast without Docker.
          globalSetup: ['test/support/globalSetup.ts'],
        },
      },
    ],
  },
});
