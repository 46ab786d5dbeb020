// Executor secrets: set, list (names and dates, never values), delete, and the access log. Global secrets are for
// site admins; a user manages their own namespace's and their orgs' secrets.
import { z } from 'zod';
import { namespaceName, secretName } from '../../core/jobSpec.js';
import { responses } from '../../core/api.js';
import { CLIENT_API_PREFIX } from '../../core/protocol.js';
import { requireNamespaceExists } from '../access.js';
import type { ServerContext } from '../context.js';
import { HttpError, defineRoute, principal, type RouteDef } from '../http.js';
import { DOCKER_AUTH_CONFIG, dockerAuthConfigProblem, secretValue } from '../secrets/secrets.js';

const setBody = z
  .strictObject({ name: secretName, value: secretValue, namespace: namespaceName.default('global') })
  .superRefine((body, ctx) => {
    if (body.name !== DOCKER_AUTH_CONFIG) return;
    const problem = dockerAuthConfigProblem(body.value);
    if (problem) ctx.addIssue({ code: 'custom', path: ['value'], message: problem });
  });

export function secretRoutes(ctx: ServerContext): RouteDef<any, any>[] {
  const { secrets } = ctx;
  const { accounts } = ctx.store;

  return [
    defineRoute({
      method: 'POST',
      url: `${CLIENT_API_PREFIX}/secrets`,
      auth: 'client',
      body: setBody,
      bodyName: 'secret',
      summary:
        'Create or replace a secret (global: site admins; user:NAME: that user; org:NAME: its members). The value is never shown again.',
      response: 'the secret (never its value); 201 when it was created, 200 when replaced',
      responseSchema: responses.secret,
      status: 201,
      otherResponses: { 200: 'An existing secret was replaced' },
      async handler({ auth, body, reply }) {
        const me = principal(auth);
        me.requireNamespace(body.namespace, 'namespace');
        await requireNamespaceExists(accounts, body.namespace, 'namespace');
        const result = await secrets.set({
          namespace: body.namespace,
          name: body.name,
          value: body.value,
          updatedBy: me.name,
        });
        reply.code(result.created ? 201 : 200);
        return { secret: result.secret };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/secrets`,
      auth: 'client',
      query: z.strictObject({ namespace: namespaceName.optional() }),
      summary: 'Secrets you can use: names, scope and who changed them when, never values (site admins: all)',
      response: 'the secrets you may see (never their values)',
      responseSchema: responses.secrets,
      async handler({ auth, query }) {
        const me = principal(auth);
        if (query.namespace && query.namespace !== 'global') me.requireNamespace(query.namespace, 'namespace');
        const scope = query.namespace ? [query.namespace] : me.siteAdmin ? undefined : ['global', ...me.namespaces];
        return { secrets: await accounts.listSecrets(scope) };
      },
    }),
    defineRoute({
      method: 'DELETE',
      url: `${CLIENT_API_PREFIX}/secrets/:name`,
      auth: 'client',
      query: z.strictObject({ namespace: namespaceName.default('global') }),
      summary: 'Delete a secret (?namespace=, default global)',
      response: 'the deleted secret',
      responseSchema: responses.deletedSecret,
      async handler({ auth, params, query }) {
        principal(auth).requireNamespace(query.namespace, 'namespace');
        if (!(await accounts.deleteSecret(query.namespace, params.name)))
          throw new HttpError(404, `no secret ${params.name} in ${query.namespace}`);
        return { deleted: { name: params.name, namespace: query.namespace } };
      },
    }),
    defineRoute({
      method: 'GET',
      url: `${CLIENT_API_PREFIX}/secrets/access-log`,
      auth: 'client',
      query: z.strictObject({
        namespace: namespaceName.optional(),
        name: secretName.optional(),
        jobId: z.coerce.number().int().positive().optional(),
        limit: z.coerce.number().int().min(1).max(1000).default(100),
      }),
      summary: 'Which job and executor received which secret, and when, newest first (site admins)',
      response: 'who resolved which secret for which job, newest first',
      responseSchema: responses.secretAccess,
      async handler({ auth, query }) {
        principal(auth).requireSiteAdmin('read the secret access log');
        return { entries: await accounts.listSecretAccess(query) };
      },
    }),
  ];
}
