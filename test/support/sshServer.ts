// A real OpenSSH server serving git over ssh, and an ssh-agent holding the one key it accepts: a test can then show
// that a checkout does not use an agent (or key) that would have let it in.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from './ports.js';
import { tempDir } from './processes.js';
import { until } from './wait.js';

export interface SshServer {
  port: number;
  /** SSH_AUTH_SOCK of an agent holding the key the server accepts for root. */
  agentSocket: string;
  /** The private key the server accepts for root (the one the agent holds), as a job's secret would carry it. */
  userKey: string;
  /** A known_hosts line for this server's own host key, as reached at `host`. */
  knownHosts(host: string): string;
  /** A known_hosts line for `host` with a host key that is not this server's (an impostor's, to a client). */
  strangerKnownHosts(host: string): string;
  /** The ssh:// URL of the repository at `repoPath` on this host, for a client at `host`. */
  url(repoPath: string, host?: string): string;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

export async function startSshServer(): Promise<SshServer> {
  const dir = await tempDir('sshd');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'host_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'user_key')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', path.join(dir, 'stranger_key')]);
  execFileSync('cp', [path.join(dir, 'user_key.pub'), path.join(dir, 'authorized_keys')]);
  const port = await freePort();
  await mkdir('/run/sshd', { recursive: true });
  await writeFile(
    path.join(dir, 'sshd_config'),
    [
      `Port ${port}`,
      'ListenAddress 0.0.0.0',
      `HostKey ${dir}/host_key`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      'StrictModes no',
      `PidFile ${dir}/sshd.pid`,
      'PermitRootLogin prohibit-password',
    ].join('\n') + '\n',
  );
  // -D: stays in the foreground, so it ends with this handle; -e: its log on stderr.
  const sshd: ChildProcess = spawn(SSHD, ['-D', '-e', '-f', path.join(dir, 'sshd_config')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  sshd.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  await until('sshd listens', () => /Server listening on 0\.0\.0\.0/.test(log) || sshd.exitCode !== null, 10_000);
  if (sshd.exitCode !== null) throw new Error(`sshd exited: ${log}`);
  const agentSocket = path.join(dir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
  await until(
    'ssh-agent takes the key',
    async () => (await run('ssh-add', [path.join(dir, 'user_key')], { SSH_AUTH_SOCK: agentSocket })) === 0,
    10_000,
  );
  const [userKey, hostKey, strangerKey] = await Promise.all(
    ['user_key', 'host_key.pub', 'stranger_key.pub'].map((file) => readFile(path.join(dir, file), 'utf8')),
  );
  const knownHostsLine = (host: string, publicKey: string): string =>
    `[${host}]:${port} ${publicKey.split(' ').slice(0, 2).join(' ')}`;
  return {
    port,
    agentSocket,
    userKey,
    knownHosts: (host) => knownHostsLine(host, hostKey),
    strangerKnownHosts: (host) => knownHostsLine(host, strangerKey),
    url: (repoPath, host = '127.0.0.1') => `ssh://root@${host}:${port}${repoPath}`,
    async stop() {
      sshd.kill('SIGTERM');
      agent.kill('SIGTERM');
    },
  };
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve) =>
    execFile(command, args, { env: { ...process.env, ...env } }, (err) => resolve(err ? 1 : 0)),
  );
}
