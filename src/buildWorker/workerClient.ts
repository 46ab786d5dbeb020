// The build worker's side of /api/build-worker/v1: each call with its timeout, retried while the network or the
// server is briefly away (the server may restart, or the worker may call another replica), never retried once the
// server has answered that the try is over.
import {
  BUILD_WORKER_API_PREFIX,
  buildPack,
  heartbeatResponse,
  type BuildPack,
  type CompleteRequest,
  type WorkerPhase,
} from '../core/builds.js';

const CALL_TIMEOUT_MS = 10_000;

/** The server refused the call for good (bad token, ended try): the worker stops. */
export class WorkerRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class WorkerClient {
  private jobToken: string | undefined;

  constructor(private readonly server: string) {}

  private async call(method: string, path: string, body?: unknown, opts: { retryForMs?: number; raw?: boolean } = {}) {
    const deadline = Date.now() + (opts.retryForMs ?? 30_000);
    let delay = 250;
    for (;;) {
      try {
        const res = await fetch(`${this.server}${BUILD_WORKER_API_PREFIX}${path}`, {
          method,
          headers: {
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...(this.jobToken ? { authorization: `Bearer ${this.jobToken}` } : {}),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(opts.raw ? 10 * CALL_TIMEOUT_MS : CALL_TIMEOUT_MS),
        });
        if (res.ok)
          return opts.raw ? Buffer.from(await res.arrayBuffer()) : res.status === 204 ? undefined : await res.json();
        const text = await res.text();
        let message = text.slice(0, 500);
        try {
          message = (JSON.parse(text) as { error?: string }).error ?? message;
        } catch {
          // not JSON
        }
        // 5xx and 429 pass; the rest is the server's answer for good.
        if (res.status < 500 && res.status !== 429) throw new WorkerRefused(res.status, message);
        if (Date.now() > deadline) throw new Error(`${path}: HTTP ${res.status}: ${message}`);
      } catch (err) {
        if (err instanceof WorkerRefused) throw err;
        if (Date.now() > deadline) throw err;
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5_000);
    }
  }

  async register(registrationToken: string): Promise<BuildPack> {
    const pack = buildPack.parse(await this.call('POST', '/register', { registrationToken }));
    this.jobToken = pack.jobToken;
    return pack;
  }

  async heartbeat(retryForMs: number): Promise<{ stop: boolean }> {
    return heartbeatResponse.parse(await this.call('POST', '/heartbeat', {}, { retryForMs }));
  }

  async phase(phase: WorkerPhase, detail?: string): Promise<void> {
    await this.call('POST', '/phase', { phase, ...(detail ? { detail } : {}) });
  }

  async log(lines: string[]): Promise<void> {
    await this.call('POST', '/log', { lines });
  }

  async context(): Promise<Buffer> {
    return (await this.call('GET', '/context', undefined, { raw: true })) as Buffer;
  }

  async complete(body: CompleteRequest): Promise<void> {
    await this.call('POST', '/complete', body, { retryForMs: 120_000 });
  }
}
