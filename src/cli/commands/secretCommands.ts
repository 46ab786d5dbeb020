// `dockhand secret …`: executor secrets on the client API. A value is read from stdin, a file or a prompt that
// does not echo, never from the command line (where `ps` and shell history would keep it); nothing prints it.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { ClientApi, CliError } from '../client.js';
import { ago, print, table } from '../output.js';

interface Secret {
  name: string;
  namespace: string;
  updatedBy: string;
  createdAt: number;
  updatedAt: number;
}

interface AccessLogEntry {
  name: string;
  namespace: string;
  jobId: number;
  attempt: number;
  executorName: string;
  accessedAt: number;
}

/** Drops exactly one line ending ("\n" or "\r\n") from the end: what `echo` and editors add. */
export function stripOneNewline(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2);
  if (text.endsWith('\n')) return text.slice(0, -1);
  return text;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin)
    chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads one line from the terminal without echoing it. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(question);
  return new Promise((resolve, reject) => {
    let value = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003') return finish(new CliError('canceled; nothing was set', 130)); // Ctrl-C
        if (ch === '\u0004') return value ? finish() : finish(new CliError('canceled; nothing was set', 130)); // Ctrl-D
        if (ch === '\u007f' || ch === '\b') value = Array.from(value).slice(0, -1).join('');
        else if (ch === '\u0015')
          value = ''; // Ctrl-U
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.setRawMode(true);
    stdin.setEncoding('utf8');
    stdin.on('data', onData);
    stdin.resume();
  });
}

/** The value to set: the file's exact bytes, stdin less one trailing newline, or typed twice at a hidden prompt. */
async function readValue(name: string, fromFile: string | undefined): Promise<string> {
  if (fromFile !== undefined) {
    try {
      return readFileSync(fromFile, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read ${fromFile}: ${(err as Error).message}`);
    }
  }
  if (process.stdin.isTTY) {
    const value = await promptHidden(`Value of ${name} (not shown): `);
    if (!value) throw new CliError('no value typed; nothing was set');
    if ((await promptHidden('Again, to confirm: ')) !== value)
      throw new CliError('the two values differ; nothing was set');
    return value;
  }
  const value = stripOneNewline(await readStdin());
  if (!value) {
    throw new CliError(
      `stdin was empty; nothing was set. Pipe the value in (printf '%s' "$VALUE" | dockhand secret set ${name}) or use --from-file FILE`,
    );
  }
  return value;
}

function namespaceQuery(params: Record<string, string | undefined>): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) query.set(key, value);
  const text = query.toString();
  return text ? `?${text}` : '';
}

/** Registers `dockhand secret …` and returns the `secret` command, for more subcommands. */
export function registerSecretCommands(program: Command): Command {
  const secret = program
    .command('secret')
    .description('Manage executor secrets: values jobs get as environment variables by naming them in `secrets:`');

  secret
    .command('set <name>')
    .description(
      'Create or update a secret. The value comes from stdin (less one trailing newline), from --from-file (exactly as is) ' +
        'or, on a terminal, from a prompt that does not echo; never from the command line',
    )
    .option('--namespace <namespace>', 'global (site admins), user:NAME or org:NAME', 'global')
    .option('--from-file <file>', 'read the value from this file, byte for byte')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { namespace: string; fromFile?: string; json?: boolean }) => {
      const api = new ClientApi();
      const value = await readValue(name, opts.fromFile);
      const { status, data } = await api.send<{ secret: Secret }>('POST', '/secrets', {
        name,
        value,
        namespace: opts.namespace,
      });
      print(
        opts.json ?? false,
        data.secret,
        () => `${status === 201 ? 'created' : 'updated'} secret ${data.secret.name} in ${data.secret.namespace}`,
      );
    });

  secret
    .command('list')
    .description('List the secrets you may see (never their values)')
    .option('--namespace <namespace>', 'only this namespace: global, user:NAME or org:NAME')
    .option('--json', 'machine-readable output')
    .action(async (opts: { namespace?: string; json?: boolean }) => {
      const { secrets } = await new ClientApi().request<{ secrets: Secret[] }>(
        'GET',
        `/secrets${namespaceQuery({ namespace: opts.namespace })}`,
      );
      print(opts.json ?? false, secrets, () =>
        secrets.length === 0
          ? 'no secrets'
          : table([
              ['NAME', 'NAMESPACE', 'UPDATED BY', 'UPDATED'],
              ...secrets.map((s) => [s.name, s.namespace, s.updatedBy, ago(s.updatedAt)]),
            ]),
      );
    });

  secret
    .command('delete <name>')
    .description('Delete a secret; jobs naming it then fall back to a global one of the same name, or are refused')
    .option('--namespace <namespace>', 'global, user:NAME or org:NAME', 'global')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { namespace: string; json?: boolean }) => {
      const data = await new ClientApi().request<{ deleted: { name: string; namespace: string } }>(
        'DELETE',
        `/secrets/${encodeURIComponent(name)}${namespaceQuery({ namespace: opts.namespace })}`,
      );
      print(opts.json ?? false, data, () => `deleted secret ${data.deleted.name} from ${data.deleted.namespace}`);
    });

  secret
    .command('access-log')
    .description('Which jobs received which secrets, newest first (site admins)')
    .option('--namespace <namespace>', 'only secrets of this namespace')
    .option('--name <name>', 'only this secret')
    .option('--job <id>', 'only this job')
    .option('--limit <n>', 'how many entries')
    .option('--json', 'machine-readable output')
    .action(async (opts: { namespace?: string; name?: string; job?: string; limit?: string; json?: boolean }) => {
      for (const [flag, raw] of [
        ['--job', opts.job],
        ['--limit', opts.limit],
      ] as const) {
        if (raw !== undefined && !(Number.isInteger(Number(raw)) && Number(raw) > 0))
          throw new CliError(`${flag} "${raw}" must be a positive whole number`);
      }
      const query = namespaceQuery({ namespace: opts.namespace, name: opts.name, jobId: opts.job, limit: opts.limit });
      const { entries } = await new ClientApi().request<{ entries: AccessLogEntry[] }>(
        'GET',
        `/secrets/access-log${query}`,
      );
      print(opts.json ?? false, entries, () =>
        entries.length === 0
          ? 'no entries'
          : table([
              ['ACCESSED', 'NAME', 'NAMESPACE', 'JOB', 'ATTEMPT', 'EXECUTOR'],
              ...entries.map((e) => [
                ago(e.accessedAt),
                e.name,
                e.namespace,
                String(e.jobId),
                String(e.attempt),
                e.executorName,
              ]),
            ]),
      );
    });

  return secret;
}
