// A real git server for tests: git's own smart HTTP backend (`git http-backend`, as CGI) behind a node:http server,
// with optional basic auth, serving bare repositories made on the fly. It listens on every address, so step
// containers on the dockhand bridge reach it through the bridge's gateway as well as the host through 127.0.0.1.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { tempDir } from './processes.js';

export interface GitRequest {
  path: string;
  /** The user name of the basic auth the client sent, if any. */
  user?: string;
  status: number;
}

export interface GitServer {
  port: number;
  /** Every request, in order: which repositories were fetched, by whom. */
  requests: GitRequest[];
  /** Makes a repository with one commit per entry (files by path); returns the commit SHAs, oldest first. */
  makeRepo(name: string, commits: Record<string, string>[], opts?: { symlinks?: Record<string, string> }): string[];
  /** The URL of `name` for a client at `host` (127.0.0.1 for the host, the bridge's gateway for containers). */
  url(name: string, opts?: { host?: string; user?: string; password?: string }): string;
  /** Where the bare repository `name` is on this host (for file:// and ssh:// URLs). */
  path(name: string): string;
  close(): Promise<void>;
}

const GIT_ID = ['-c', 'user.email=test@example.com', '-c', 'user.name=test'];

export async function startGitServer(
  opts: { credentials?: { user: string; password: string } } = {},
): Promise<GitServer> {
  const root = await tempDir('git-server');
  const requests: GitRequest[] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const auth = req.headers.authorization;
    const [user, password] = auth?.startsWith('Basic ')
      ? Buffer.from(auth.slice(6), 'base64').toString().split(':')
      : [];
    const record = (status: number): void => void requests.push({ path: url.pathname, user, status });
    if (opts.credentials && (user !== opts.credentials.user || password !== opts.credentials.password)) {
      record(401);
      res.writeHead(401, { 'www-authenticate': 'Basic realm="git"' }).end();
      return;
    }
    const cgi = spawn('git', ['http-backend'], {
      env: {
        PATH: process.env.PATH,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: decodeURIComponent(url.pathname),
        REQUEST_METHOD: req.method,
        QUERY_STRING: url.search.slice(1),
        CONTENT_TYPE: req.headers['content-type'] ?? '',
        REMOTE_USER: user ?? '',
        REMOTE_ADDR: req.socket.remoteAddress ?? '',
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        HTTP_CONTENT_ENCODING: String(req.headers['content-encoding'] ?? ''),
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    req.pipe(cgi.stdin);
    // CGI: headers (Status among them), a blank line, then the body.
    let head = Buffer.alloc(0);
    let started = false;
    cgi.stdout.on('data', (chunk: Buffer) => {
      if (started) return void res.write(chunk);
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      started = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString().split('\r\n')) {
        const colon = line.indexOf(':');
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
        else res.setHeader(name, value);
      }
      record(status);
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.stdout.on('end', () => res.end());
    cgi.on('error', () => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    requests,
    makeRepo(name, commits, extra = {}) {
      const work = path.join(root, `${name}.work`);
      execFileSync('git', ['init', '-q', work]);
      const shas: string[] = [];
      commits.forEach((files, i) => {
        for (const [file, content] of Object.entries(files)) {
          mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
          writeFileSync(path.join(work, file), content);
        }
        if (i === 0)
          for (const [link, target] of Object.entries(extra.symlinks ?? {}))
            execFileSync('ln', ['-s', target, path.join(work, link)]);
        execFileSync('git', ['-C', work, ...GIT_ID, 'add', '-A']);
        execFileSync('git', ['-C', work, ...GIT_ID, 'commit', '-qm', `commit ${i + 1}`, '--allow-empty']);
        shas.push(execFileSync('git', ['-C', work, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim());
      });
      execFileSync('git', ['clone', '-q', '--bare', work, path.join(root, `${name}.git`)]);
      return shas;
    },
    url(name, { host = '127.0.0.1', user, password } = {}) {
      const auth = user ? `${encodeURIComponent(user)}${password ? `:${encodeURIComponent(password)}` : ''}@` : '';
      return `http://${auth}${host}:${port}/${name}.git`;
    },
    path: (name) => path.join(root, `${name}.git`),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
