// A fake cloud metadata service on this machine. 169.254.169.254 is put on the loopback interface, so the
// kernel delivers every packet for it locally (host and containers alike) and a test that probes the
// metadata address can never reach a real metadata service or leave the machine.
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export const METADATA_IP = '169.254.169.254';
export const FAKE_METADATA_BODY = 'fake-metadata\n';

export interface FakeMetadataServer {
  /** 'http://169.254.169.254' */
  url: string;
  /** Requests it answered, the test's own probe included. */
  requests(): number;
  stop(): Promise<void>;
}

export async function startFakeMetadataServer(): Promise<FakeMetadataServer> {
  if (process.getuid?.() !== 0)
    throw new Error('the fake metadata server needs root (it adds 169.254.169.254 to lo and listens on port 80)');

  const added = !(await onLoopback());
  if (added) await ip(['addr', 'add', `${METADATA_IP}/32`, 'dev', 'lo']);

  let requests = 0;
  const server = http.createServer((req, res) => {
    requests++;
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(FAKE_METADATA_BODY);
  });
  const removeAddress = async (): Promise<void> => {
    if (added) await ip(['addr', 'del', `${METADATA_IP}/32`, 'dev', 'lo']);
  };

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          e.code === 'EADDRINUSE'
            ? new Error(
                `${METADATA_IP}:80 is taken: another fake metadata server runs (only one test file at a time may use it)`,
              )
            : e,
        ),
      );
      server.listen(80, METADATA_IP, () => resolve());
    });
    const url = `http://${METADATA_IP}`;
    // Proves the address is local: the answer comes from this server, not from anything on a network.
    const res = await fetch(`${url}/`, { signal: AbortSignal.timeout(5_000) });
    const body = await res.text();
    if (res.status !== 200 || body !== FAKE_METADATA_BODY)
      throw new Error(`the fake metadata server answered ${res.status} ${JSON.stringify(body)}`);
    if ((server.address() as AddressInfo).port !== 80) throw new Error('the fake metadata server is not on port 80');
    return {
      url,
      requests: () => requests,
      async stop() {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await removeAddress();
      },
    };
  } catch (e) {
    server.closeAllConnections();
    if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    await removeAddress();
    throw e;
  }
}

async function onLoopback(): Promise<boolean> {
  const out = await ip(['-o', '-4', 'addr', 'show', 'dev', 'lo']);
  return out.split('\n').some((line) => line.includes(` ${METADATA_IP}/`));
}

function ip(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile('ip', args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const hint = typeof err.code === 'string' ? ' (run scripts/provision.sh as root; it installs iproute2)' : '';
      reject(new Error(`ip ${args.join(' ')}: ${stderr.trim() || err.message}${hint}`));
    }),
  );
}
