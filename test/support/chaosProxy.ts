// A TCP proxy for tests that makes the network bad on purpose: it delays every chunk in both directions (order kept),
// resets every open connection on demand (as a flaky NAT or a restarted load balancer would), and can stall: hold
// every byte for a while, then reset, as a connection that silently stops passing packets ends in a timeout.
import net from 'node:net';

interface Pipe {
  client: net.Socket;
  upstream: net.Socket;
}

export class ChaosProxy {
  private server?: net.Server;
  private readonly pipes = new Set<Pipe>();
  private stalledUntil = 0;
  /** Extra delay per chunk, drawn uniformly from [min, max] ms. */
  delayMs: [number, number] = [0, 0];
  /** Connections reset so far. */
  resets = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<string> {
    const server = net.createServer({ noDelay: true }, (client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    return `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  }

  /** Resets every open connection, both sides, at once. */
  resetAll(): void {
    for (const pipe of this.pipes) this.reset(pipe);
  }

  /** Holds every byte for `ms` (neither side hears anything), then resets the connections that were open. */
  async stall(ms: number): Promise<void> {
    this.stalledUntil = Date.now() + ms;
    await new Promise((resolve) => setTimeout(resolve, ms));
    this.resetAll();
  }

  async stop(): Promise<void> {
    this.resetAll();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
  }

  private reset(pipe: Pipe): void {
    if (!this.pipes.delete(pipe)) return;
    this.resets++;
    pipe.client.resetAndDestroy();
    pipe.upstream.resetAndDestroy();
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect({ ...this.target, noDelay: true });
    const pipe = { client, upstream };
    this.pipes.add(pipe);
    const end = (): void => void this.reset(pipe);
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    this.forward(client, upstream);
    this.forward(upstream, client);
  }

  /** Copies `from` to `to`, each chunk after its delay and after every chunk before it. */
  private forward(from: net.Socket, to: net.Socket): void {
    let last = Promise.resolve();
    from.on('data', (chunk: Buffer) => {
      const [min, max] = this.delayMs;
      const delay = min + Math.random() * (max - min);
      last = last.then(async () => {
        const wait = Math.max(delay, this.stalledUntil - Date.now());
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        if (!to.destroyed) to.write(chunk);
      });
    });
    from.on('end', () => void last.then(() => to.end()));
  }
}
