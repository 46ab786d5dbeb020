// The repository checkout, written once for every runtime: which URLs an executor fetches, the git commands (as a
// plan a runtime may also turn into a script for its sandbox), how they are shown in the log with credentials
// hidden, and the environment git gets, which holds nothing of the executor's: no config, no credential helpers,
// no SSH keys or agent. Where git runs is the runtime's business (a host process for shell, a helper container
// on the job's network for docker); credentials come only from the URL.
import type { JobSpec } from '../../core/jobSpec.js';
import type { Stream } from '../jobLog.js';
import { JobFailure, type SetupLog } from '../runtimes/runtime.js';

type Repository = NonNullable<JobSpec['repository']>;

/** A lone user name can be a token too (https://TOKEN@host/…); only the conventional "git" user is not secret. */
const PUBLIC_GIT_USER = 'git';

/** Hides the password in URLs like https://user:token@host/repo.git before they are logged. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-z+]+:\/\/)([^/@]+)@/i, (_m, scheme: string, userinfo: string) => {
    const [user] = userinfo.split(':');
    return `${scheme}${userinfo.includes(':') ? `${user}:***` : user === PUBLIC_GIT_USER ? user : '***'}@`;
  });
}

/** The secrets in a repository URL (password, or a token used as user name), for the job's redactor. */
export function urlCredentials(url: string | undefined): string[] {
  if (!url) return [];
  try {
    const { username, password } = new URL(url);
    return [password, username === PUBLIC_GIT_USER ? '' : username].filter(Boolean).map(decodeURIComponent);
  } catch {
    return [];
  }
}

/** The executor setting that lets jobs check out repositories from the executor's own file system. */
export const ALLOW_LOCAL_REPOSITORIES = 'EXECUTOR_ALLOW_LOCAL_REPOSITORIES';

/**
 * Refuses URLs that would reach the executor's own files: a `file://` repository is a directory of the executor's
 * host, so it is fetched only where the operator allowed it (a development setting).
 */
export function checkRepositoryUrl(url: string, allowLocal: boolean): void {
  if (/^file:/i.test(url) && !allowLocal) {
    throw new JobFailure(
      'repository_refused',
      `this executor does not check out file:// repositories, which are paths on its own host; use an https://, ssh:// or git:// URL ` +
        `(an operator can allow local repositories for development with ${ALLOW_LOCAL_REPOSITORIES}=true)`,
    );
  }
}

/** The transports git may use, redirects and submodules included: never `ext::` and friends, `file` only when allowed. */
export function allowedGitProtocols(allowLocal: boolean): string {
  return ['https', 'http', 'ssh', 'git', ...(allowLocal ? ['file'] : [])].join(':');
}

/**
 * ssh as git runs it: no config files, no agent, no key files, no known hosts of the executor's. The host key is
 * taken on first use into a per-checkout file (there is no trusted list to check it against).
 */
export function sshCommand(knownHostsFile: string): string {
  return [
    'ssh', '-F', '/dev/null', '-o', 'IdentityAgent=none', '-o', 'IdentitiesOnly=yes', '-o', 'IdentityFile=none',
    '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=accept-new', '-o', `UserKnownHostsFile=${knownHostsFile}`,
    '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ControlMaster=no', '-o', 'ControlPath=none',
  ].join(' ');
}

/**
 * Everything git is given in its environment: a home of its own (no ~/.gitconfig, no ~/.git-credentials), no
 * system config, no prompts, the allowed transports, and ssh without the executor's identity.
 */
export function gitEnvironment(opts: { home: string; path: string; allowLocal: boolean }): Record<string, string> {
  return {
    PATH: opts.path,
    HOME: opts.home,
    XDG_CONFIG_HOME: opts.home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_LFS_SKIP_SMUDGE: '1',
    GIT_ALLOW_PROTOCOL: allowedGitProtocols(opts.allowLocal),
    GIT_SSH_COMMAND: sshCommand(`${opts.home}/known_hosts`),
    LANG: 'C.UTF-8',
  };
}

export interface GitCommand {
  /** The log entry: setup.git.init, setup.git.fetch, … */
  key: string;
  args: string[];
  /** The arguments as shown in the log (credentials hidden). */
  shown: string[];
}

/** The git commands that check `repo` out in the current directory, in order. */
export function checkoutCommands(repo: Repository): GitCommand[] {
  const command = (key: string, args: string[], shown: string[] = args): GitCommand => ({ key: `setup.git.${key}`, args, shown });
  const fetchArgs = [
    '-c', 'protocol.version=2', 'fetch', '--progress', '--no-recurse-submodules',
    repo.fetchTags ? '--tags' : '--no-tags',
    ...(repo.shallow ? ['--depth=1'] : []),
    ...(repo.sparseCheckout ? ['--filter=blob:none'] : []),
    'origin', repo.commit,
  ];
  return [
    command('init', ['init', '--quiet', '.']),
    command('add-remote', ['remote', 'add', 'origin', repo.url], ['remote', 'add', 'origin', redactUrl(repo.url)]),
    command('fetch', fetchArgs),
    ...(repo.sparseCheckout ? [command('sparse-checkout', ['sparse-checkout', 'set', '--no-cone', '--', ...repo.sparseCheckout])] : []),
    command('checkout', ['-c', 'advice.detachedHead=false', 'checkout', '--progress', '--force', 'FETCH_HEAD']),
  ];
}

/** Runs one git command where the runtime runs git (in the checkout directory); resolves to its exit code. */
export type GitRunner = (args: string[], io: { output(stream: Stream, text: string): void; signal: AbortSignal }) => Promise<number>;

/**
 * Checks `repo` out with `git`, one log entry per command. A command that fails ends the checkout with a retryable
 * `checkout_failure` (a network or a server can be down); a runner that cannot start git says why in the same way.
 */
export async function checkout(repo: Repository, git: GitRunner, log: SetupLog, signal: AbortSignal): Promise<void> {
  for (const { key, args, shown } of checkoutCommands(repo)) {
    const entry = log.startEntry(key, ['git', ...shown]);
    const started = Date.now();
    let exitCode: number;
    try {
      exitCode = await git(args, { output: entry.write, signal });
    } catch (err) {
      entry.note(`could not run git: ${(err as Error).message}`);
      entry.finish(127, Date.now() - started);
      if (err instanceof JobFailure) throw err;
      throw new JobFailure('checkout_failure', `${key} failed: could not run git (${(err as Error).message})`);
    }
    entry.finish(exitCode, Date.now() - started);
    if (exitCode !== 0) throw new JobFailure('checkout_failure', `${key} failed with exit code ${exitCode}; see its log`);
  }
}
