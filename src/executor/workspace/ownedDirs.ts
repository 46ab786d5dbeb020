// The job directories (and disks) this executor process made and still uses, as its cleanup sees them. A directory
// counts as owned from before it exists: while one is being made the cleanup cannot yet tell it from a dead
// process's leftover, so it removes nothing of that kind until the new one has its name here.

export class OwnedDirs {
  private readonly owned = new Set<string>();
  private making = 0;

  /** Runs `make`, which creates a directory (`dirOf` gives its path), owning it from the start. */
  async make<T>(make: () => Promise<T>, dirOf: (made: T) => string): Promise<T> {
    this.making++;
    try {
      const made = await make();
      this.owned.add(dirOf(made));
      return made;
    } finally {
      this.making--;
    }
  }

  /** No job of this process uses `dir` any more (it was removed, or is kept for a look). */
  release(dir: string): void {
    this.owned.delete(dir);
  }

  /** Whether a cleanup must leave `dir` alone: this process owns it, or is making one it cannot name yet. */
  spares(dir: string): boolean {
    return this.making > 0 || this.owned.has(dir);
  }
}
