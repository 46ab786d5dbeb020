import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // End-to-end tests start real server and executor processes; give them room on a 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    reporters: ['default'],
    // Builds the local Docker test images once (they cannot be pulled here); fails fast without Docker.
    globalSetup: ['test/support/globalSetup.ts'],
  },
});
