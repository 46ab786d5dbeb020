// `dockhand whoami`, `dockhand user …`, `dockhand org …` and `dockhand token …`: accounts on the client API.
import type { Command } from 'commander';
import { ClientApi } from '../client.js';
import { ago, print, table } from '../output.js';

interface User {
  name: string;
  siteAdmin: boolean;
  createdAt: number;
}

interface UserRow extends User {
  orgs: string[];
}

interface Org {
  name: string;
  createdAt: number;
  members: number;
}

interface Member {
  name: string;
  siteAdmin: boolean;
}

interface ApiToken {
  id: number | string;
  name: string;
  user: string;
  createdAt: number;
  lastUsedAt: number | null;
}

const yesNo = (b: boolean): string => (b ? 'yes' : 'no');
const list = (items: string[]): string => (items.length ? items.join(', ') : '-');
const seg = encodeURIComponent;

export function registerAccountCommands(program: Command): void {
  program
    .command('whoami')
    .description('Show who the API token belongs to: user, site admin or not, organizations, namespaces')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const me = await new ClientApi().request<{ user: User; orgs: string[]; namespaces: string[] }>('GET', '/me');
      print(opts.json ?? false, me, () =>
        [
          `user:        ${me.user.name}`,
          `site admin:  ${yesNo(me.user.siteAdmin)}`,
          `orgs:        ${list(me.orgs)}`,
          `namespaces:  ${list(me.namespaces)}`,
        ].join('\n'),
      );
    });

  const user = program.command('user').description('Manage users (site admins only)');

  user
    .command('create <name>')
    .description('Create a user; give them an API token with `dockhand token create NAME --user USER`')
    .option('--site-admin', 'make the user a site admin: they see and manage everything')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { siteAdmin?: boolean; json?: boolean }) => {
      const { user: created } = await new ClientApi().request<{ user: User }>('POST', '/users', {
        name,
        siteAdmin: opts.siteAdmin ?? false,
      });
      print(
        opts.json ?? false,
        created,
        () =>
          `created user ${created.name}${created.siteAdmin ? ' (site admin)' : ''}\n` +
          `Give them an API token with: dockhand token create NAME --user ${created.name}`,
      );
    });

  user
    .command('list')
    .description('List users with their organizations')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const { users } = await new ClientApi().request<{ users: UserRow[] }>('GET', '/users');
      print(opts.json ?? false, users, () =>
        users.length === 0
          ? 'no users'
          : table([
              ['NAME', 'SITE ADMIN', 'ORGS', 'CREATED'],
              ...users.map((u) => [u.name, yesNo(u.siteAdmin), list(u.orgs), ago(u.createdAt)]),
            ]),
      );
    });

  user
    .command('delete <name>')
    .description('Delete a user with their API tokens, memberships and user:NAME secrets (their jobs stay)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<{ deleted: string }>('DELETE', `/users/${seg(name)}`);
      print(opts.json ?? false, data, () => `deleted user ${data.deleted}; their API tokens no longer work`);
    });

  for (const [command, siteAdmin, verb] of [
    ['set-admin', true, 'Make a user a site admin'],
    ['unset-admin', false, 'Make a site admin an ordinary user again (the last site admin stays one)'],
  ] as const) {
    user
      .command(`${command} <name>`)
      .description(verb)
      .option('--json', 'machine-readable output')
      .action(async (name: string, opts: { json?: boolean }) => {
        const { user: changed } = await new ClientApi().request<{ user: User }>(
          'POST',
          `/users/${seg(name)}/site-admin`,
          { siteAdmin },
        );
        print(
          opts.json ?? false,
          changed,
          () => `${changed.name} is ${changed.siteAdmin ? 'now' : 'no longer'} a site admin`,
        );
      });
  }

  const org = program.command('org').description('Manage organizations: their members share the org:NAME namespace');

  org
    .command('create <name>')
    .description('Create an organization; you become its first member')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const { org: created } = await new ClientApi().request<{ org: Org }>('POST', '/orgs', { name });
      print(opts.json ?? false, created, () => `created organization ${created.name} (namespace org:${created.name})`);
    });

  org
    .command('list')
    .description('List your organizations (a site admin sees all)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const { orgs } = await new ClientApi().request<{ orgs: Org[] }>('GET', '/orgs');
      print(opts.json ?? false, orgs, () =>
        orgs.length === 0
          ? 'no organizations'
          : table([['NAME', 'MEMBERS', 'CREATED'], ...orgs.map((o) => [o.name, String(o.members), ago(o.createdAt)])]),
      );
    });

  org
    .command('delete <name>')
    .description('Delete an organization with its memberships and secrets (its jobs stay)')
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<{ deleted: string }>('DELETE', `/orgs/${seg(name)}`);
      print(opts.json ?? false, data, () => `deleted organization ${data.deleted}`);
    });

  org
    .command('members <org>')
    .description("List an organization's members")
    .option('--json', 'machine-readable output')
    .action(async (name: string, opts: { json?: boolean }) => {
      const { members } = await new ClientApi().request<{ members: Member[] }>('GET', `/orgs/${seg(name)}/members`);
      print(opts.json ?? false, members, () =>
        members.length === 0
          ? 'no members'
          : table([['NAME', 'SITE ADMIN'], ...members.map((m) => [m.name, yesNo(m.siteAdmin)])]),
      );
    });

  org
    .command('add-member <org> <user>')
    .description('Add a user to an organization')
    .option('--json', 'machine-readable output')
    .action(async (name: string, member: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<{ org: string; user: string }>('POST', `/orgs/${seg(name)}/members`, {
        user: member,
      });
      print(opts.json ?? false, data, () => `added ${member} to ${name}`);
    });

  org
    .command('remove-member <org> <user>')
    .description('Remove a user from an organization')
    .option('--json', 'machine-readable output')
    .action(async (name: string, member: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<{ org: string; user: string }>(
        'DELETE',
        `/orgs/${seg(name)}/members/${seg(member)}`,
      );
      print(opts.json ?? false, data, () => `removed ${member} from ${name}`);
    });

  const token = program.command('token').description('Manage API tokens (DOCKHAND_TOKEN values)');

  token
    .command('create <name>')
    .description('Create an API token and print it, alone on stdout, this once: TOKEN=$(dockhand token create ci)')
    .option('--user <user>', 'for this user instead of yourself (site admins)')
    .option('--json', 'machine-readable output, the token included')
    .action(async (name: string, opts: { user?: string; json?: boolean }) => {
      const data = await new ClientApi().request<{ token: ApiToken; secret: string }>('POST', '/tokens', {
        name,
        ...(opts.user ? { user: opts.user } : {}),
      });
      print(opts.json ?? false, data, () => data.secret);
      process.stderr.write(
        `API token ${data.token.id} "${data.token.name}" for user ${data.token.user}: it is shown only this once and stored hashed, so keep it now ` +
          '(use it as DOCKHAND_TOKEN)\n',
      );
    });

  token
    .command('list')
    .description('List your API tokens (never their values)')
    .option('--user <user>', "another user's tokens (site admins)")
    .option('--json', 'machine-readable output')
    .action(async (opts: { user?: string; json?: boolean }) => {
      const query = opts.user ? `?${new URLSearchParams({ user: opts.user })}` : '';
      const { tokens } = await new ClientApi().request<{ tokens: ApiToken[] }>('GET', `/tokens${query}`);
      print(opts.json ?? false, tokens, () =>
        tokens.length === 0
          ? 'no API tokens'
          : table([
              ['ID', 'NAME', 'USER', 'CREATED', 'LAST USED'],
              ...tokens.map((t) => [String(t.id), t.name, t.user, ago(t.createdAt), ago(t.lastUsedAt)]),
            ]),
      );
    });

  token
    .command('revoke <id>')
    .description('Revoke an API token (its ID from `dockhand token list`): it stops working at once')
    .option('--json', 'machine-readable output')
    .action(async (id: string, opts: { json?: boolean }) => {
      const data = await new ClientApi().request<{ deleted: number | string }>('DELETE', `/tokens/${seg(id)}`);
      print(opts.json ?? false, data, () => `revoked API token ${data.deleted}`);
    });
}
