// A controller work queue: keys are coalesced while queued and handled one at a time, after the store change
// that queued them has been delivered to everyone (never inside a store listener).
export class WorkQueue {
  private readonly queued = new Set<string>();
  private scheduled = false;
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly handle: (key: string) => void,
  ) {}

  add(key: string): void {
    if (this.closed) return;
    this.queued.add(key);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.drain());
  }

  close(): void {
    this.closed = true;
    this.queued.clear();
  }

  private drain(): void {
    this.scheduled = false;
    // Keys queued while draining (by the handler's own writes) wait for the next turn, so each handler sees the
    // store settled.
    const keys = [...this.queued];
    this.queued.clear();
    for (const key of keys) {
      if (this.closed) return;
      try {
        this.handle(key);
      } catch (err) {
        console.error(`kube double: ${this.name} failed on ${key}`, err);
      }
    }
  }
}
