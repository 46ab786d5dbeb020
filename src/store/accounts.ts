// Users, organizations, API tokens, executor secrets and the secret access log: one implementation over `Sql`,
// shared by the SQLite and PostgreSQL stores (the queries read the same in both).
import type { Sql } from './sql.js';

export interface UserRecord {
  id: number;
  name: string;
  siteAdmin: boolean;
  createdAt: number;
}

export interface OrgRecord {
  id: number;
  name: string;
  createdAt: number;
  members: number;
}

export interface ApiTokenRecord {
  id: number;
  name: string;
  user: string;
  createdAt: number;
  lastUsedAt: number | null;
}

export interface SecretRecord {
  namespace: string;
  name: string;
  updatedBy: string;
  createdAt: number;
  updatedAt: number;
}

/** A secret with its stored ciphertext, for the server's resolution and for key rotation. */
export interface StoredSecret extends SecretRecord {
  ciphertext: string;
}

export interface SecretAccess {
  namespace: string;
  name: string;
  jobId: number;
  attempt: number;
  executorName: string;
  accessedAt: number;
}

export interface SecretAccessFilter {
  namespace?: string;
  name?: string;
  jobId?: number;
  limit: number;
}

/** Why a change to a user was refused. */
export type UserChange = 'ok' | 'missing' | 'last_admin';

type Row = Record<string, unknown>;

const toUser = (r: Row): UserRecord => ({
  id: Number(r.id),
  name: r.name as string,
  siteAdmin: Boolean(r.site_admin),
  createdAt: Number(r.created_at),
});
const toOrg = (r: Row): OrgRecord => ({
  id: Number(r.id),
  name: r.name as string,
  createdAt: Number(r.created_at),
  members: Number(r.members ?? 0),
});
const toToken = (r: Row): ApiTokenRecord => ({
  id: Number(r.id),
  name: r.name as string,
  user: r.user_name as string,
  createdAt: Number(r.created_at),
  lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
});
const toSecret = (r: Row): StoredSecret => ({
  namespace: r.namespace as string,
  name: r.name as string,
  updatedBy: r.updated_by as string,
  createdAt: Number(r.created_at),
  updatedAt: Number(r.updated_at),
  ciphertext: r.value as string,
});
const withoutValue = ({ ciphertext: _, ...record }: StoredSecret): SecretRecord => record;

/** A token's last use is written at most this often, so client calls don't each cost a write. */
const TOKEN_USE_RESOLUTION_MS = 60_000;

const ORG_COLUMNS = 'o.id, o.name, o.created_at, (SELECT count(*) FROM org_members m WHERE m.org_id = o.id) AS members';
const TOKEN_COLUMNS = 't.id, t.name, t.created_at, t.last_used_at, u.name AS user_name';

/** A change that would leave no site admin is refused in the same statement, so two at once cannot both pass. */
const OTHER_ADMINS = '(SELECT count(*) FROM users a WHERE a.site_admin = 1 AND a.name <> $1) > 0';

export class Accounts {
  constructor(private readonly sql: Sql) {}

  // Users

  /** Undefined when a user of that name exists. */
  async createUser(name: string, siteAdmin: boolean, now: number): Promise<UserRecord | undefined> {
    const row = await this.sql.get(
      'INSERT INTO users (name, site_admin, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING *',
      [name, siteAdmin, now],
    );
    return row && toUser(row);
  }

  async getUser(name: string): Promise<UserRecord | undefined> {
    const row = await this.sql.get('SELECT * FROM users WHERE name = $1', [name]);
    return row && toUser(row);
  }

  async listUsers(): Promise<(UserRecord & { orgs: string[] })[]> {
    const users = (await this.sql.all('SELECT * FROM users ORDER BY name')).map(toUser);
    const memberships = await this.sql.all<{ user_id: number; name: string }>(
      'SELECT m.user_id, o.name FROM org_members m JOIN orgs o ON o.id = m.org_id ORDER BY o.name',
    );
    return users.map((u) => ({ ...u, orgs: memberships.filter((m) => Number(m.user_id) === u.id).map((m) => m.name) }));
  }

  async setSiteAdmin(name: string, siteAdmin: boolean): Promise<UserChange> {
    const changed = await this.sql.run(
      `UPDATE users SET site_admin = $2 WHERE name = $1 AND ($2 = 1 OR ${OTHER_ADMINS})`,
      [name, siteAdmin],
    );
    if (changed) return 'ok';
    return (await this.getUser(name)) ? 'last_admin' : 'missing';
  }

  /** Deletes the user with their tokens, memberships and user-namespace secrets; their jobs stay. */
  async deleteUser(name: string): Promise<UserChange> {
    return this.sql.tx(async (sql) => {
      const changed = await sql.run(`DELETE FROM users WHERE name = $1 AND (site_admin = 0 OR ${OTHER_ADMINS})`, [
        name,
      ]);
      if (!changed) return (await sql.get('SELECT 1 FROM users WHERE name = $1', [name])) ? 'last_admin' : 'missing';
      await sql.run('DELETE FROM secrets WHERE namespace = $1', [`user:${name}`]);
      return 'ok';
    });
  }

  async orgsOf(userId: number): Promise<string[]> {
    const rows = await this.sql.all<{ name: string }>(
      'SELECT o.name FROM org_members m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.name',
      [userId],
    );
    return rows.map((r) => r.name);
  }

  // Organizations

  /** Undefined when an org of that name exists. The creator, if given, becomes its first member. */
  async createOrg(name: string, creatorId: number | undefined, now: number): Promise<OrgRecord | undefined> {
    return this.sql.tx(async (sql) => {
      const row = await sql.get<{ id: number }>(
        'INSERT INTO orgs (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id',
        [name, now],
      );
      if (!row) return undefined;
      if (creatorId !== undefined)
        await sql.run('INSERT INTO org_members (org_id, user_id, created_at) VALUES ($1, $2, $3)', [
          row.id,
          creatorId,
          now,
        ]);
      return toOrg((await sql.get(`SELECT ${ORG_COLUMNS} FROM orgs o WHERE o.id = $1`, [row.id]))!);
    });
  }

  async getOrg(name: string): Promise<OrgRecord | undefined> {
    const row = await this.sql.get(`SELECT ${ORG_COLUMNS} FROM orgs o WHERE o.name = $1`, [name]);
    return row && toOrg(row);
  }

  /** Every org, or only those `memberId` belongs to. */
  async listOrgs(memberId?: number): Promise<OrgRecord[]> {
    const rows =
      memberId === undefined
        ? await this.sql.all(`SELECT ${ORG_COLUMNS} FROM orgs o ORDER BY o.name`)
        : await this.sql.all(
            `SELECT ${ORG_COLUMNS} FROM orgs o JOIN org_members mine ON mine.org_id = o.id AND mine.user_id = $1 ORDER BY o.name`,
            [memberId],
          );
    return rows.map(toOrg);
  }

  /** Deletes the org with its memberships and secrets; its jobs stay. */
  async deleteOrg(name: string): Promise<boolean> {
    return this.sql.tx(async (sql) => {
      if (!(await sql.run('DELETE FROM orgs WHERE name = $1', [name]))) return false;
      await sql.run('DELETE FROM secrets WHERE namespace = $1', [`org:${name}`]);
      return true;
    });
  }

  async listMembers(orgId: number): Promise<UserRecord[]> {
    const rows = await this.sql.all(
      'SELECT u.* FROM org_members m JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 ORDER BY u.name',
      [orgId],
    );
    return rows.map(toUser);
  }

  /** False when the user already was a member. */
  async addMember(orgId: number, userId: number, now: number): Promise<boolean> {
    return (
      (await this.sql.run(
        'INSERT INTO org_members (org_id, user_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [orgId, userId, now],
      )) > 0
    );
  }

  /** False when the user was not a member. */
  async removeMember(orgId: number, userId: number): Promise<boolean> {
    return (await this.sql.run('DELETE FROM org_members WHERE org_id = $1 AND user_id = $2', [orgId, userId])) > 0;
  }

  // API tokens (only their SHA-256 digests are stored)

  /** Storing a hash that is already stored changes nothing (replicas starting together may both try). */
  async createToken(userId: number, name: string, tokenHash: string, now: number): Promise<ApiTokenRecord> {
    await this.sql.run(
      'INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (token_hash) DO NOTHING',
      [userId, name, tokenHash, now],
    );
    return toToken(
      (await this.sql.get(
        `SELECT ${TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1`,
        [tokenHash],
      ))!,
    );
  }

  /** The token and its user; records its use (to the minute). */
  async findToken(tokenHash: string, now: number): Promise<{ token: ApiTokenRecord; user: UserRecord } | undefined> {
    const row = await this.sql.get(
      `SELECT ${TOKEN_COLUMNS}, u.id AS uid, u.site_admin AS u_site_admin, u.created_at AS u_created_at
       FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1`,
      [tokenHash],
    );
    if (!row) return undefined;
    const token = toToken(row);
    if (token.lastUsedAt === null || now - token.lastUsedAt >= TOKEN_USE_RESOLUTION_MS) {
      await this.sql.run('UPDATE api_tokens SET last_used_at = $2 WHERE id = $1', [token.id, now]);
    }
    return {
      token,
      user: {
        id: Number(row.uid),
        name: token.user,
        siteAdmin: Boolean(row.u_site_admin),
        createdAt: Number(row.u_created_at),
      },
    };
  }

  async countTokens(): Promise<number> {
    return Number((await this.sql.get<{ n: number }>('SELECT count(*) AS n FROM api_tokens'))!.n);
  }

  async listTokens(userId?: number): Promise<ApiTokenRecord[]> {
    const rows =
      userId === undefined
        ? await this.sql.all(`SELECT ${TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id`)
        : await this.sql.all(
            `SELECT ${TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.user_id = $1 ORDER BY t.id`,
            [userId],
          );
    return rows.map(toToken);
  }

  async getToken(id: number): Promise<ApiTokenRecord | undefined> {
    const row = await this.sql.get(
      `SELECT ${TOKEN_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $1`,
      [id],
    );
    return row && toToken(row);
  }

  async deleteToken(id: number): Promise<boolean> {
    return (await this.sql.run('DELETE FROM api_tokens WHERE id = $1', [id])) > 0;
  }

  async deleteTokensNamed(userId: number, name: string): Promise<void> {
    await this.sql.run('DELETE FROM api_tokens WHERE user_id = $1 AND name = $2', [userId, name]);
  }

  // Secrets (values are ciphertexts; the server encrypts and decrypts them)

  /** Creates or replaces a secret; says which. */
  async putSecret(s: {
    namespace: string;
    name: string;
    ciphertext: string;
    updatedBy: string;
    now: number;
  }): Promise<{ created: boolean; secret: SecretRecord }> {
    return this.sql.tx(async (sql) => {
      const updated = await sql.run(
        'UPDATE secrets SET value = $3, updated_by = $4, updated_at = $5 WHERE namespace = $1 AND name = $2',
        [s.namespace, s.name, s.ciphertext, s.updatedBy, s.now],
      );
      if (!updated) {
        await sql.run(
          'INSERT INTO secrets (namespace, name, value, updated_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)',
          [s.namespace, s.name, s.ciphertext, s.updatedBy, s.now],
        );
      }
      const row = await sql.get('SELECT * FROM secrets WHERE namespace = $1 AND name = $2', [s.namespace, s.name]);
      return { created: !updated, secret: withoutValue(toSecret(row!)) };
    });
  }

  /** Every secret, or those in `namespaces`; names and dates only. */
  async listSecrets(namespaces?: string[]): Promise<SecretRecord[]> {
    const rows = await this.sql.all('SELECT * FROM secrets ORDER BY namespace, name');
    return rows
      .map(toSecret)
      .filter((s) => !namespaces || namespaces.includes(s.namespace))
      .map(withoutValue);
  }

  /** The secrets named `names` in `namespace` and in global, with their ciphertexts. */
  async findSecrets(namespace: string, names: string[]): Promise<StoredSecret[]> {
    if (!names.length) return [];
    const rows = await this.sql.all("SELECT * FROM secrets WHERE namespace = $1 OR namespace = 'global'", [namespace]);
    return rows.map(toSecret).filter((s) => names.includes(s.name));
  }

  async deleteSecret(namespace: string, name: string): Promise<boolean> {
    return (await this.sql.run('DELETE FROM secrets WHERE namespace = $1 AND name = $2', [namespace, name])) > 0;
  }

  async recordSecretAccess(entries: SecretAccess[]): Promise<void> {
    if (!entries.length) return;
    await this.sql.tx(async (sql) => {
      for (const e of entries) {
        await sql.run(
          'INSERT INTO secret_access_log (namespace, name, job_id, attempt, executor_name, accessed_at) VALUES ($1, $2, $3, $4, $5, $6)',
          [e.namespace, e.name, e.jobId, e.attempt, e.executorName, e.accessedAt],
        );
      }
    });
  }

  /** Newest first. */
  async listSecretAccess(filter: SecretAccessFilter): Promise<SecretAccess[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const add = (column: string, value: unknown): void => {
      params.push(value);
      where.push(`${column} = $${params.length}`);
    };
    if (filter.namespace) add('namespace', filter.namespace);
    if (filter.name) add('name', filter.name);
    if (filter.jobId) add('job_id', filter.jobId);
    params.push(filter.limit);
    const rows = await this.sql.all(
      `SELECT * FROM secret_access_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT $${params.length}`,
      params,
    );
    return rows.map((r) => ({
      namespace: r.namespace as string,
      name: r.name as string,
      jobId: Number(r.job_id),
      attempt: Number(r.attempt),
      executorName: r.executor_name as string,
      accessedAt: Number(r.accessed_at),
    }));
  }

  // Encryption keys

  /**
   * Every stored ciphertext (secret values and jobs' registry credentials) passed through `rewrite` in one
   * transaction, for key rotation. `rewrite` gets the ciphertext and the context it was bound to.
   */
  async rewriteCiphertexts(
    rewrite: (ciphertext: string, context: string) => string,
  ): Promise<{ secrets: number; jobs: number }> {
    return this.sql.tx(async (sql) => {
      let secrets = 0;
      for (const row of await sql.all<{ id: number; namespace: string; name: string; value: string }>(
        'SELECT id, namespace, name, value FROM secrets',
      )) {
        const next = rewrite(row.value, secretContext(row.namespace, row.name));
        if (next !== row.value) secrets += await sql.run('UPDATE secrets SET value = $2 WHERE id = $1', [row.id, next]);
      }
      let jobs = 0;
      for (const row of await sql.all<{ id: number; docker_auth_config: string }>(
        'SELECT id, docker_auth_config FROM jobs WHERE docker_auth_config IS NOT NULL',
      )) {
        const next = rewrite(row.docker_auth_config, JOB_CREDENTIALS_CONTEXT);
        if (next !== row.docker_auth_config)
          jobs += await sql.run('UPDATE jobs SET docker_auth_config = $2 WHERE id = $1', [row.id, next]);
      }
      return { secrets, jobs };
    });
  }

  /** The distinct first `length` characters of stored ciphertexts (their key ids), to find keys this server lacks. */
  async ciphertextPrefixes(length: number): Promise<string[]> {
    const rows = await this.sql.all<{ p: string }>(
      `SELECT DISTINCT substr(value, 1, $1) AS p FROM secrets
       UNION SELECT DISTINCT substr(docker_auth_config, 1, $1) AS p FROM jobs WHERE docker_auth_config IS NOT NULL`,
      [length],
    );
    return rows.map((r) => r.p);
  }
}

/** What a secret's ciphertext is bound to, so a value moved to another row fails to decrypt. */
export function secretContext(namespace: string, name: string): string {
  return `secret:${namespace}/${name}`;
}

/** What a job's registry credentials are bound to (the job id is not known before the row exists). */
export const JOB_CREDENTIALS_CONTEXT = 'job:docker_auth_config';
