// Users, organizations and API tokens. Site admins manage users; any user may create an org (becoming its first
// member), and members manage their org. Tokens are shown once and stored as SHA-256 digests.
import { z } from 'zod';
import { NAME_PATTERN } from '../../core/jobSpec.js';
import { responses } from '../../core/api.js';
import { CLIENT_API_PREFIX } from '../../core/protocol.js';
import { API_TOKEN_PREFIX, hashToken, newToken } from '../../core/tokens.js';
import type { OrgRecord, UserChange, UserRecord } from '../../store/accounts.js';
import type { Principal } from '../access.js';
import type { ServerContext } from '../context.js';
import { HttpError, defineRoute, principal, type RouteDef } from '../http.js';

const accountName = z
  .string()
  .regex(NAME_PATTERN, 'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit');

const userView = (u: UserRecord) => ({ name: u.name, siteAdmin: u.siteAdmin, createdAt: u.createdAt });
const orgView = (o: OrgRecord) => ({ name: o.name, createdAt: o.createdAt, members: o.members });

function refuseUserChange(result: UserChange, name: string): void {
  if (result === 'missing') throw new HttpError(404, `no user ${name}`);
  if (result === 'last_admin')
    throw new HttpError(409, `${name} is the last site admin; make another user a site admin first`);
}

export function accountRoutes(ctx: ServerContext): RouteDef<any, any>[] {
  const { accounts } = ctx.store;

  async function requireUser(name: string | undefined): Promise<UserRecord> {
    const user = name === undefined ? undefined : await accounts.getUser(name);
    if (!user) throw new HttpError(404, `no user ${name}`);
    return user;
  }

  /** The org, if `me` may manage it; to others it does not exist. */
  async function requireOrg(me: Principal, name: string | undefined): Promise<OrgRecord> {
    const org = name === undefined ? undefined : await accounts.getOrg(name);
    if (!org || !me.mayUse(`org:${org.name}`)) throw new HttpError(404, `no org ${name} that you are a member of`);
    return org;
  }

  return [
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/me`,
      auth: 'client',
      summary: 'Who the token belongs to, their orgs and namespaces',
      response: 'who you are: your user, orgs and namespaces',
      responseSchema: responses.me,
      async handler({ auth }) {
        const me = principal(auth);
        return { user: userView(me.user), orgs: me.orgs, namespaces: me.namespaces };
      },
    }),

    // Users (site admins)
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/users`,
      auth: 'client',
      summary: 'Every user with their orgs (site admins)',
      response: 'every user, with their orgs',
      responseSchema: responses.users,
      async handler({ auth }) {
        principal(auth).requireSiteAdmin('list users');
        return { users: (await accounts.listUsers()).map((u) => ({ ...userView(u), orgs: u.orgs })) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/users`,
      auth: 'client',
      summary: 'Create a user (site admins)',
      body: z.strictObject({ name: accountName, siteAdmin: z.boolean().default(false) }),
      response: 'the new user',
      responseSchema: responses.user,
      status: 201,
      otherResponses: { 409: 'A user of that name exists' },
      async handler({ auth, body, reply }) {
        principal(auth).requireSiteAdmin('create users');
        const user = await accounts.createUser(body.name, body.siteAdmin, Date.now());
        if (!user) throw new HttpError(409, `user ${body.name} already exists`);
        reply.code(201);
        return { user: userView(user) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/users/:name/site-admin`,
      auth: 'client',
      summary: 'Make a user a site admin or not (site admins)',
      body: z.strictObject({ siteAdmin: z.boolean() }),
      response: 'the user, changed',
      responseSchema: responses.user,
      otherResponses: { 409: 'It would leave no site admin' },
      async handler({ auth, body, params }) {
        principal(auth).requireSiteAdmin('change site admins');
        refuseUserChange(await accounts.setSiteAdmin(params.name, body.siteAdmin), params.name);
        return { user: userView(await requireUser(params.name)) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: `${CLIENT_API_PREFIX}/users/:name`,
      auth: 'client',
      summary: 'Delete a user with their tokens, memberships and user secrets; their jobs stay (site admins)',
      response: 'the name of the deleted user',
      responseSchema: responses.deletedName,
      otherResponses: { 409: 'The last site admin cannot be deleted' },
      async handler({ auth, params }) {
        principal(auth).requireSiteAdmin('delete users');
        refuseUserChange(await accounts.deleteUser(params.name), params.name);
        return { deleted: params.name };
      },
    }),

    // Organizations
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/orgs`,
      auth: 'client',
      summary: 'Your orgs (site admins: all)',
      response: 'the orgs you are a member of (site admins: all)',
      responseSchema: responses.orgs,
      async handler({ auth }) {
        const me = principal(auth);
        return { orgs: (await accounts.listOrgs(me.siteAdmin ? undefined : me.user.id)).map(orgView) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/orgs`,
      auth: 'client',
      summary: 'Create an org; you become its first member',
      body: z.strictObject({ name: accountName }),
      response: 'the new org',
      responseSchema: responses.org,
      status: 201,
      otherResponses: { 409: 'An org of that name exists' },
      async handler({ auth, body, reply }) {
        const org = await accounts.createOrg(body.name, principal(auth).user.id, Date.now());
        if (!org) throw new HttpError(409, `org ${body.name} already exists`);
        reply.code(201);
        return { org: orgView(org) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: `${CLIENT_API_PREFIX}/orgs/:name`,
      auth: 'client',
      summary: 'Delete an org with its memberships and secrets; its jobs stay (members, site admins)',
      response: 'the name of the deleted org',
      responseSchema: responses.deletedName,
      async handler({ auth, params }) {
        const org = await requireOrg(principal(auth), params.name);
        await accounts.deleteOrg(org.name);
        return { deleted: org.name };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/orgs/:name/members`,
      auth: 'client',
      summary: "An org's members (members, site admins)",
      response: 'the members',
      responseSchema: responses.members,
      async handler({ auth, params }) {
        const org = await requireOrg(principal(auth), params.name);
        return { members: (await accounts.listMembers(org.id)).map((u) => ({ name: u.name, siteAdmin: u.siteAdmin })) };
      },
    }),
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/orgs/:name/members`,
      auth: 'client',
      summary: 'Add a user to an org (members, site admins)',
      body: z.strictObject({ user: accountName }),
      response: 'the org and the user added',
      responseSchema: responses.membership,
      status: 201,
      otherResponses: { 409: 'Already a member' },
      async handler({ auth, params, body, reply }) {
        const org = await requireOrg(principal(auth), params.name);
        const user = await requireUser(body.user);
        if (!(await accounts.addMember(org.id, user.id, Date.now())))
          throw new HttpError(409, `${user.name} is already a member of ${org.name}`);
        reply.code(201);
        return { org: org.name, user: user.name };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: `${CLIENT_API_PREFIX}/orgs/:name/members/:user`,
      auth: 'client',
      summary: 'Remove a user from an org (members, site admins)',
      response: 'the org and the user removed',
      responseSchema: responses.membership,
      async handler({ auth, params }) {
        const org = await requireOrg(principal(auth), params.name);
        const user = await requireUser(params.user);
        if (!(await accounts.removeMember(org.id, user.id)))
          throw new HttpError(404, `${user.name} is not a member of ${org.name}`);
        return { org: org.name, user: user.name };
      },
    }),

    // API tokens
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/tokens`,
      auth: 'client',
      summary: 'Create an API token for yourself (site admins: for anyone); the secret is shown only in this answer',
      body: z.strictObject({ name: z.string().min(1).max(100), user: accountName.optional() }),
      response: 'the token record, and the token itself (shown this once)',
      responseSchema: responses.createdToken,
      status: 201,
      async handler({ auth, body, reply }) {
        const me = principal(auth);
        if (body.user !== undefined && body.user !== me.name) me.requireSiteAdmin("create other users' tokens");
        const owner = body.user === undefined ? me.user : await requireUser(body.user);
        const secret = newToken(API_TOKEN_PREFIX);
        const token = await accounts.createToken(owner.id, body.name, hashToken(secret), Date.now());
        reply.code(201);
        return { token, secret };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/tokens`,
      auth: 'client',
      summary: "Your API tokens (site admins: another user's with ?user=)",
      query: z.strictObject({ user: accountName.optional() }),
      response: 'the tokens (never their secrets)',
      responseSchema: responses.tokens,
      async handler({ auth, query }) {
        const me = principal(auth);
        if (query.user !== undefined && query.user !== me.name) me.requireSiteAdmin("list other users' tokens");
        const owner = query.user === undefined ? me.user : await requireUser(query.user);
        return { tokens: await accounts.listTokens(owner.id) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: `${CLIENT_API_PREFIX}/tokens/:id`,
      auth: 'client',
      summary: 'Revoke an API token (yours; site admins: any)',
      response: 'the id of the deleted token',
      responseSchema: responses.deletedId,
      async handler({ auth, params }) {
        const me = principal(auth);
        const id = Number(params.id);
        const token = Number.isSafeInteger(id) && id > 0 ? await accounts.getToken(id) : undefined;
        if (!token || (token.user !== me.name && !me.siteAdmin))
          throw new HttpError(404, `no token ${params.id} of yours`);
        await accounts.deleteToken(token.id);
        return { deleted: token.id };
      },
    }),
  ];
}
