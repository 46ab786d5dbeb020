// Runs once per vitest run, before any test file: the suite needs Docker and the local test images,
// so a machine without them fails here with one clear message instead of in every Docker test.
import { ensureTestImages } from './docker.js';

export default async function setup(): Promise<void> {
  await ensureTestImages();
}
