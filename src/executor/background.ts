// Work a runtime does off a job's critical path (removing a container, a workspace, a disk), awaited when the
// runtime closes so that a stopped executor leaves nothing half-removed.
export class BackgroundWork {
  private readonly pending = new Set<Promise<void>>();

  /** Starts `task`; its failure goes to `onError` (the janitor catches what is left). */
  run(task: () => Promise<void>, onError: (err: Error) => void): void {
    const done: Promise<void> = task()
      .catch(onError)
      .finally(() => this.pending.delete(done));
    this.pending.add(done);
  }

  /** Resolves when everything started so far has ended. */
  async settle(): Promise<void> {
    while (this.pending.size) await Promise.all(this.pending);
  }
}
