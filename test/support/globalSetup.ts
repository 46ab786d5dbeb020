// Runs once per vitest run, before any test file: the suite needs Docker and the local test images,
// so a machine without them fails here with one clear message instead of in every Docker test.
// It also starts the run's PostgreSQL server and hands its URL to the workers (inject('postgresUrl')).
import type { TestProject } from 'vitest/node';
import { ensureTestImages } from './docker.js';
import { startPostgres } from './postgres.js';

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  await ensureTestImages();
  // Last, so that nothing after it can fail and leave the server running without a teardown.
  const postgres = await startPostgres();
  project.provide('postgresUrl', postgres.url);
  return async () => {
    await postgres.stop();
  };
}
