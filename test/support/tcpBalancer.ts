// A small TCP load balancer for tests: listens on 127.0.0.1 and forwards each incoming connection to one of its
// targets, round robin, skipping a target whose connect fails. With one target it is a TCP proxy that a test can
// cut (stop listening and drop every open connection, as a network partition would) and restore on the same port.
import net from 'node:net';

export interface Target {
  host: string;
  port: number;
}

export class TcpBalancer {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private next = 0;
  private boundPort = 0;
  /** Connections forwarded to each target, by index, and connections refused because no target answered. */
  readonly forwarded: number[];
  refused = 0;

  constructor(readonly targets: Target[]) {
    if (targets.length === 0) throw new Error('a balancer needs at least one target');
    this.forwarded = targets.map(() => 0);
  }

  /** The port it listens on (kept across cut() and start() again). */
  get port(): number {
    return this.boundPort;
  }

  get url(): string {
    return `http://127.0.0.1:${this.boundPort}`;
  }

  get listening(): boolean {
    return this.server !== undefined;
  }

  /** Open connections, both sides counted. */
  get openSockets(): number {
    return this.sockets.size;
  }

  /** Starts listening: on `port`, else on the port it had before, else on a free one. Resolves with the port. */
  async start(port = this.boundPort): Promise<number> {
    if (this.server) throw new Error('the balancer is already listening');
    const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    this.boundPort = (server.address() as net.AddressInfo).port;
    return this.boundPort;
  }

  /** Stops listening (new connections are refused) and destroys every open connection at once. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  close(): Promise<void> {
    return this.cut();
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  private accept(client: net.Socket): void {
    this.track(client);
    client.pause();
    client.on('error', () => client.destroy());
    const first = this.next;
    this.next = (this.next + 1) % this.targets.length;
    this.connect(client, first, 0);
  }

  /** Tries target `index`, then the next ones on a failed connect, until every target was tried once. */
  private connect(client: net.Socket, index: number, tried: number): void {
    if (client.destroyed) return;
    if (tried === this.targets.length) {
      this.refused++;
      client.destroy();
      return;
    }
    const target = this.targets[index];
    const upstream = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    this.track(upstream);
    let connected = false;
    const onClientGone = (): void => {
      if (!connected) upstream.destroy();
    };
    client.once('close', onClientGone);
    upstream.once('connect', () => {
      connected = true;
      client.off('close', onClientGone);
      this.forwarded[index]++;
      // Either side ending ends the other's writes (pipe); either side failing or closing drops both.
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => {
        // Let what upstream sent before closing reach the client, then drop the connection.
        if (client.writableLength === 0) client.destroy();
        else client.end(() => client.destroy());
      });
    });
    upstream.on('error', () => {
      upstream.destroy();
      if (!connected) {
        client.off('close', onClientGone);
        this.connect(client, (index + 1) % this.targets.length, tried + 1);
      }
    });
  }
}

/** Starts a balancer in front of `targets` on a free port (or `port`). */
export async function startBalancer(targets: Target[], port?: number): Promise<TcpBalancer> {
  const balancer = new TcpBalancer(targets);
  await balancer.start(port);
  return balancer;
}

/** The host and port of an http:// or postgres:// URL, as a balancer target. */
export function targetOf(url: string): Target {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}
