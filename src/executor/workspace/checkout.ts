// The repository checkout, written once for every runtime: which URLs an executor fetches, the git commands (as a
// plan a runtime may also turn into a script for its sandbox), how they are shown in the log with credentials
// hidden, and the environment git gets, which holds nothing of the executor's: no config, no credential helpers,
// no SSH keys or agent. Where git runs is the runtime's business (a host process for shell, a helper container
// on the job's network for docker); credentials come only from the URL or the job's secrets (gitCredentials).
import { repositoryTransport, type JobSpec } from '../../core/jobSpec.js';
import type { Stream } from '../jobLog.js';
import { JobFailure, type SetupLog } from '../runtimes/runtime.js';

type Repository = NonNullable<JobSpec['repository']>;

/** A lone user name can be a token too (https://TOKEN@host/…); only the conventional "git" user is not secret. */
const PUBLIC_GIT_USER = 'git';

/** Hides the password in URLs like https://user:token@host/repo.git before they are logged. */
export function redactUrl(url: string): string {
  // Up to the last "@" before the path: a password may hold an unescaped "@" too.
  return url.replace(/^([a-z+]+:\/\/)([^/]+)@/i, (_m, scheme: string, userinfo: string) => {
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

/** The files a job's SSH credentials are written to, in git's own home, only while ssh runs. */
const SSH_KEY_FILE = '"$HOME/ssh-key"';
const PINNED_HOSTS_FILE = '"$HOME/pinned_hosts"';

/**
 * ssh as git runs it (git hands GIT_SSH_COMMAND to sh): no config files, no agent, no key files, no known hosts of
 * the executor's. A job's key (sshKeySecret) and known hosts (knownHosts) arrive in the environment; they are
 * written to git's home for each ssh call, the key emptied after it. Without known hosts the server's key is taken
 * on first use into a per-checkout file (there is no trusted list to check it against).
 */
export function sshCommand(opts: { key: boolean; pinnedHosts: boolean }): string {
  const ssh = [
    'ssh',
    '-F',
    '/dev/null',
    '-o',
    'IdentityAgent=none',
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    `IdentityFile=${opts.key ? SSH_KEY_FILE : 'none'}`,
    '-o',
    'BatchMode=yes',
    ...(opts.pinnedHosts
      ? ['-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${PINNED_HOSTS_FILE}`]
      : ['-o', 'StrictHostKeyChecking=accept-new', '-o', 'UserKnownHostsFile="$HOME/known_hosts"']),
    '-o',
    'GlobalKnownHostsFile=/dev/null',
    '-o',
    'ControlMaster=no',
    '-o',
    'ControlPath=none',
  ].join(' ');
  if (!opts.key && !opts.pinnedHosts) return ssh;
  const writes = [
    ...(opts.key ? [`printf '%s\\n' "$DOCKHAND_GIT_SSH_KEY" > ${SSH_KEY_FILE}`] : []),
    ...(opts.pinnedHosts ? [`printf '%s\\n' "$DOCKHAND_GIT_KNOWN_HOSTS" > ${PINNED_HOSTS_FILE}`] : []),
  ];
  // git appends "$@" (the host and the remote command) to the last word: the function's call. The key is emptied
  // with the shell alone (the docker checkout helper has no rm); git's home goes with the job.
  const forget = opts.key ? ` : > ${SSH_KEY_FILE};` : '';
  return `dockhand_ssh() { umask 077; ${writes.join(' && ')} || return 255; ${ssh} "$@"; s=$?;${forget} return $s; }; dockhand_ssh`;
}

/**
 * A credential helper that answers git only for the repository's own protocol and host (a redirect elsewhere gets
 * nothing), with the user name and password from the environment.
 */
const CREDENTIAL_HELPER =
  '!f() { test "$1" = get || exit 0; h=; p=; while IFS= read -r l && test -n "$l"; do case "$l" in host=*) h="${l#host=}";; ' +
  'protocol=*) p="${l#protocol=}";; esac; done; test "$h" = "$DOCKHAND_GIT_HOST" && test "$p" = "$DOCKHAND_GIT_PROTOCOL" || exit 0; ' +
  'printf \'username=%s\\npassword=%s\\n\' "$DOCKHAND_GIT_USERNAME" "$DOCKHAND_GIT_PASSWORD"; }; f';

/** A secret's value as a credential: the line break a file-made secret ends with is not part of it. */
const credentialValue = (value: string): string => value.replace(/\r?\n$/, '');

/**
 * The job's repository credentials (repository.passwordSecret, sshKeySecret, knownHosts) as git's environment.
 * Their values are among the job's secrets, so its log masks them already.
 */
export function gitCredentials(repo: Repository | undefined, secrets: Record<string, string>): Record<string, string> {
  if (!repo) return {};
  const env: Record<string, string> = {};
  const secret = (name: string): string => {
    const value = secrets[name];
    // The server resolves every secret a spec names before it hands the job out; a missing one is a bug, said plainly.
    if (value === undefined)
      throw new JobFailure(
        'system_failure',
        `the job's secret ${name} (named by its repository) did not arrive with the job`,
      );
    return credentialValue(value);
  };
  if (repo.passwordSecret && repositoryTransport(repo.url) === 'http') {
    const url = new URL(repo.url);
    Object.assign(env, {
      GIT_CONFIG_COUNT: '2',
      // The empty value first clears any helper list, then ours is the only one.
      GIT_CONFIG_KEY_0: 'credential.helper',
      GIT_CONFIG_VALUE_0: '',
      GIT_CONFIG_KEY_1: 'credential.helper',
      GIT_CONFIG_VALUE_1: CREDENTIAL_HELPER,
      DOCKHAND_GIT_PROTOCOL: url.protocol.replace(/:$/, ''),
      DOCKHAND_GIT_HOST: url.host,
      DOCKHAND_GIT_USERNAME: repo.username ?? PUBLIC_GIT_USER,
      DOCKHAND_GIT_PASSWORD: secret(repo.passwordSecret),
    });
  }
  if (repo.sshKeySecret) env.DOCKHAND_GIT_SSH_KEY = secret(repo.sshKeySecret);
  if (repo.knownHosts) env.DOCKHAND_GIT_KNOWN_HOSTS = repo.knownHosts;
  if (repo.sshKeySecret || repo.knownHosts)
    env.GIT_SSH_COMMAND = sshCommand({ key: !!repo.sshKeySecret, pinnedHosts: !!repo.knownHosts });
  return env;
}

/** How the fetch authenticates, for the log: which secret, never its value. */
export function describeCredentials(repo: Repository): string | undefined {
  const parts = [
    repo.passwordSecret &&
      `user ${repo.username ?? PUBLIC_GIT_USER} with the password in secret ${repo.passwordSecret}, for ${new URL(repo.url).origin} only`,
    repo.sshKeySecret && `the SSH key in secret ${repo.sshKeySecret}`,
    repo.knownHosts && 'host keys checked against repository.knownHosts',
  ].filter(Boolean);
  return parts.length > 0 ? `credentials: ${parts.join('; ')}` : undefined;
}

export interface GitEnvironmentOptions {
  /** git's home: private to the checkout, empty, gone with it. */
  home: string;
  path: string;
  allowLocal: boolean;
  repository?: Repository;
  /** The job's secrets, where repository credentials are found. */
  secrets?: Record<string, string>;
}

/**
 * Everything git is given in its environment: a home of its own (no ~/.gitconfig, no ~/.git-credentials), no
 * system config, no prompts, the allowed transports, ssh without the executor's identity, and the job's own
 * repository credentials (gitCredentials).
 */
export function gitEnvironment(opts: GitEnvironmentOptions): Record<string, string> {
  return {
    PATH: opts.path,
    HOME: opts.home,
    XDG_CONFIG_HOME: opts.home,
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_CONFIG_GLOBAL: '/dev/null',
    GIT_TERMINAL_PROMPT: '0',
    GIT_LFS_SKIP_SMUDGE: '1',
    GIT_ALLOW_PROTOCOL: allowedGitProtocols(opts.allowLocal),
    GIT_SSH_COMMAND: sshCommand({ key: false, pinnedHosts: false }),
    LANG: 'C.UTF-8',
    ...gitCredentials(opts.repository, opts.secrets ?? {}),
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
  const command = (key: string, args: string[], shown: string[] = args): GitCommand => ({
    key: `setup.git.${key}`,
    args,
    shown,
  });
  const fetchArgs = [
    '-c',
    'protocol.version=2',
    'fetch',
    '--progress',
    '--no-recurse-submodules',
    repo.fetchTags ? '--tags' : '--no-tags',
    ...(repo.shallow ? ['--depth=1'] : []),
    ...(repo.sparseCheckout ? ['--filter=blob:none'] : []),
    'origin',
    repo.commit,
  ];
  return [
    command('init', ['init', '--quiet', '.']),
    command('add-remote', ['remote', 'add', 'origin', repo.url], ['remote', 'add', 'origin', redactUrl(repo.url)]),
    command('fetch', fetchArgs),
    ...(repo.sparseCheckout
      ? [command('sparse-checkout', ['sparse-checkout', 'set', '--no-cone', '--', ...repo.sparseCheckout])]
      : []),
    command('checkout', ['-c', 'advice.detachedHead=false', 'checkout', '--progress', '--force', 'FETCH_HEAD']),
  ];
}

/** Runs one git command where the runtime runs git (in the checkout directory); resolves to its exit code. */
export type GitRunner = (
  args: string[],
  io: { output(stream: Stream, text: string): void; signal: AbortSignal },
) => Promise<number>;

/**
 * Checks `repo` out with `git`, one log entry per command. A command that fails ends the checkout with a retryable
 * `checkout_failure` (a network or a server can be down); a runner that cannot start git says why in the same way.
 */
export async function checkout(repo: Repository, git: GitRunner, log: SetupLog, signal: AbortSignal): Promise<void> {
  for (const { key, args, shown } of checkoutCommands(repo)) {
    const entry = log.startEntry(key, ['git', ...shown]);
    const credentials = key === 'setup.git.fetch' ? describeCredentials(repo) : undefined;
    if (credentials) entry.note(credentials);
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
    if (exitCode !== 0)
      throw new JobFailure('checkout_failure', `${key} failed with exit code ${exitCode}; see its log`);
  }
}
