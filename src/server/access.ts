// Who may do what. A user belongs to their own namespace ("user:NAME") and to each org they are a member of
// ("org:NAME"); site admins act on every namespace, including "global".
import type { Accounts, UserRecord } from '../store/accounts.js';
import { HttpError, badRequest } from './httpError.js';

export class Principal {
  /** The namespaces this user belongs to (not counting site-admin rights). */
  readonly namespaces: string[];

  constructor(
    readonly user: UserRecord,
    readonly orgs: string[],
  ) {
    this.namespaces = [`user:${user.name}`, ...orgs.map((org) => `org:${org}`)];
  }

  get name(): string {
    return this.user.name;
  }

  get siteAdmin(): boolean {
    return this.user.siteAdmin;
  }

  /** May see and act on the jobs and secrets of `namespace`. */
  mayUse(namespace: string): boolean {
    return this.siteAdmin || this.namespaces.includes(namespace);
  }

  /** The namespaces whose jobs this user may list; undefined means all of them. */
  visibleNamespaces(): string[] | undefined {
    return this.siteAdmin ? undefined : this.namespaces;
  }

  requireSiteAdmin(action: string): void {
    if (!this.siteAdmin)
      throw new HttpError(403, `only site admins can ${action}; ask one, or use a site admin's token`);
  }

  /** Refuses, naming the field, a namespace this user may not submit to or keep secrets in. */
  requireNamespace(namespace: string, field: string): void {
    if (this.mayUse(namespace)) return;
    const yours = this.namespaces.map((n) => `"${n}"`).join(', ');
    const why =
      namespace === 'global'
        ? 'only site admins use the global namespace'
        : `you are not ${namespace.startsWith('org:') ? 'a member of that org' : 'that user'}`;
    throw new HttpError(403, `you may not use namespace "${namespace}"`, {
      issues: [{ field, message: `${why}; your namespaces: ${yours}` }],
    });
  }
}

/** A namespace must name a user or org that exists (a typo would otherwise hide jobs and secrets from everyone). */
export async function requireNamespaceExists(accounts: Accounts, namespace: string, field: string): Promise<void> {
  if (namespace === 'global') return;
  const [kind, name] = namespace.split(':') as ['user' | 'org', string];
  const exists = kind === 'user' ? await accounts.getUser(name) : await accounts.getOrg(name);
  if (exists) return;
  const fix =
    kind === 'user'
      ? `a site admin creates it with: dockhand user create ${name}`
      : `create it with: dockhand org create ${name}`;
  throw badRequest(`no ${kind} "${name}"`, [{ field, message: `no ${kind} "${name}"; ${fix}` }]);
}
