import { describe, expect, it } from 'vitest';
import { OwnedDirs } from '../../src/executor/workspace/ownedDirs.js';

describe('OwnedDirs', () => {
  it('spares every directory while one is being made, then only its own until released', async () => {
    const owned = new OwnedDirs();
    let finish!: (dir: string) => void;
    const making = owned.make(
      () => new Promise<string>((resolve) => (finish = resolve)),
      (dir) => dir,
    );
    // The new directory may already exist under a name the cleanup cannot know yet.
    expect(owned.spares('/srv/workspaces/job-1-abc')).toBe(true);
    expect(owned.spares('/srv/workspaces/job-0-old')).toBe(true);
    finish('/srv/workspaces/job-1-abc');
    expect(await making).toBe('/srv/workspaces/job-1-abc');
    expect(owned.spares('/srv/workspaces/job-1-abc')).toBe(true);
    expect(owned.spares('/srv/workspaces/job-0-old')).toBe(false);
    owned.release('/srv/workspaces/job-1-abc');
    expect(owned.spares('/srv/workspaces/job-1-abc')).toBe(false);
  });

  it('owns nothing when making fails, and spares nothing more after it', async () => {
    const owned = new OwnedDirs();
    await expect(
      owned.make(
        () => Promise.reject(new Error('disk full')),
        (dir: string) => dir,
      ),
    ).rejects.toThrow('disk full');
    expect(owned.spares('/srv/workspaces/job-2-xyz')).toBe(false);
  });
});
