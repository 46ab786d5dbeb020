// One HTTP(S) request on Node's own client, for what fetch cannot do: trust a test's own CA, send from a chosen local
// address, announce a body longer than the one sent.
import http from 'node:http';
import https from 'node:https';

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/**
 * One request over a fresh connection, from `localAddress` when given, trusting `ca` when given (HTTPS). With
 * `declaredLength`, the body is announced with that Content-Length but only its start is sent: a server that
 * refuses by the length answers at once (a client still writing the rest would race the closing connection).
 */
export function request(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    localAddress?: string;
    ca?: Buffer;
    declaredLength?: number;
    /** Fails the request when no answer has come by then. */
    timeoutMs?: number;
  } = {},
): Promise<Answer> {
  const target = new URL(url);
  const lib = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(
      target,
      {
        method: opts.method ?? 'GET',
        headers: opts.headers,
        localAddress: opts.localAddress,
        ca: opts.ca,
        agent: false,
        timeout: opts.timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          if (opts.declaredLength !== undefined) req.destroy();
          const text = Buffer.concat(chunks).toString();
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url}`)));
    req.on('error', reject);
    if (opts.declaredLength !== undefined) {
      req.setHeader('content-length', String(opts.declaredLength));
      req.write(opts.body ?? '');
    } else req.end(opts.body);
  });
}
