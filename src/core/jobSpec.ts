// The job spec: what a client submits (YAML or JSON). The same zod schema validates the CLI's input, the HTTP
// API's body and generates the OpenAPI document, so an error reads the same everywhere.
import path from 'node:path';
import { z } from 'zod';
import YAML from 'yaml';
import { staticDockerAuthConfigInput } from './dockerAuthConfig.js';
import { isSafeRelativePath } from './paths.js';
import { parseDuration, parseSize } from './units.js';

export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const NAMESPACE_PATTERN = /^(global|(user|org):[A-Za-z0-9][A-Za-z0-9._-]{0,62})$/;
/** A user name or uid, optionally with a group: "app", "1000", "1000:1000". */
const CONTAINER_USER_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$/;
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** A commit SHA or ref name; never starts with "-" so it cannot be read as a git option. */
const GIT_REVISION_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._/@^~{}-]{0,254}$/;
/** Transports git can fetch from. `ext::` and friends would run commands on the executor. */
const GIT_URL_PATTERN = /^(https?:\/\/|ssh:\/\/|git:\/\/|file:\/\/|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:)\S+$/;

/** Variables the executor sets for every step, which a secret must not replace. */
const RESERVED_ENV = /^(DOCKHAND_.*|PATH|HOME)$/;

export const secretName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be a secret name: letters, digits and "_", not starting with a digit')
  .refine(
    (name) => !RESERVED_ENV.test(name),
    'is a name the executor sets for every step (PATH, HOME, DOCKHAND_*); pick another',
  );

export const MAX_FILES_BYTES = 8 * 1024 * 1024;

/** "global", "user:NAME" or "org:NAME": whose a job or a secret is. */
export const namespaceName = z.string().regex(NAMESPACE_PATTERN, 'must be "global", "user:NAME" or "org:NAME"');

export const queueName = z
  .string()
  .regex(NAME_PATTERN, 'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit');

const workspacePath = z
  .string()
  .refine(isSafeRelativePath, 'must be a relative path inside the workspace (no leading "/", no ".." segments)');

const workspaceFile = workspacePath.refine(
  (p) => !p.endsWith('/') && path.posix.normalize(p) !== '.',
  'must name a file, not a directory',
);

/** A string or number turned into a positive quantity by `parse`, or an issue with `message`. */
function positiveQuantity(parse: (value: string | number) => number | undefined, message: string) {
  return z.union([z.string(), z.number()]).transform((value, ctx) => {
    const parsed = parse(value);
    if (parsed === undefined || parsed <= 0) {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    }
    return parsed;
  });
}

/** Timers cannot wait longer than about 24 days; a week is more than any job should need. */
export const MAX_DURATION_MS = 7 * 24 * 3_600_000;

export const durationInput = positiveQuantity(
  parseDuration,
  'must be a positive duration such as "90s", "5m", "1h30m" or a number of seconds',
).refine((ms) => ms <= MAX_DURATION_MS, 'must be at most 7 days ("168h")');
const sizeInput = positiveQuantity(parseSize, 'must be a positive size such as "512M", "2G" or a number of bytes');

const envValue = z.union([z.string(), z.number(), z.boolean()]).transform(String);

export const stepSpec = z.strictObject({
  key: z.string().regex(NAME_PATTERN, 'must be 1-63 letters, digits, ".", "_" or "-"').optional(),
  image: z
    .string()
    .min(1)
    .max(512)
    .optional()
    .describe('Container image; used by the docker, vm and kubernetes runtimes'),
  run: z
    .string()
    .min(1, 'must be a non-empty shell script')
    .max(1024 * 1024),
  dir: workspacePath.optional().describe('Working directory, relative to the workspace'),
  env: z.record(z.string().regex(ENV_NAME_PATTERN, 'must be a valid environment variable name'), envValue).optional(),
  timeout: durationInput.optional().describe('Step timeout, e.g. "10m"'),
  user: z
    .string()
    .regex(CONTAINER_USER_PATTERN, 'must be a user name or uid, optionally with ":group", e.g. "1000:1000" or "app"')
    .optional()
    .describe("User the step runs as inside its container (docker runtime); default the image's user"),
});

export const repositorySpec = z.strictObject({
  url: z.string().regex(GIT_URL_PATTERN, 'must be a git URL (https://, ssh://, git://, file:// or user@host:path)'),
  commit: z
    .string()
    .regex(GIT_REVISION_PATTERN, 'must be a commit SHA or a ref name (not starting with "-")')
    .default('HEAD'),
  fetchTags: z.boolean().default(false),
  shallow: z.boolean().default(true),
  sparseCheckout: z
    .array(
      z
        .string()
        .min(1)
        .refine((p) => !p.startsWith('-'), 'must not start with "-"'),
    )
    .optional(),
  dir: workspacePath
    .optional()
    .describe('Where to check out, relative to the workspace; default: the workspace itself'),
  username: z
    .string()
    .regex(/^[^\s:@/]{1,256}$/, 'must be a user name without spaces, ":", "@" or "/"')
    .optional()
    .describe('User name sent with passwordSecret over HTTPS; default "git"'),
  passwordSecret: secretName
    .optional()
    .describe('A secret of the job (listed in secrets) holding the HTTPS password or access token for the fetch'),
  sshKeySecret: secretName
    .optional()
    .describe(
      'A secret of the job (listed in secrets) holding the private SSH key for an ssh:// or user@host:path URL',
    ),
  knownHosts: z
    .string()
    .min(1)
    .max(65_536, 'at most 64 KiB')
    .optional()
    .describe("known_hosts lines the SSH server's key must match; without them the key is taken on first use"),
});

/** What kind of URL a repository has: credentials and host keys apply to one kind each. */
export function repositoryTransport(url: string): 'http' | 'ssh' | 'other' {
  if (/^https?:\/\//i.test(url)) return 'http';
  if (/^ssh:\/\//i.test(url) || /^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:/.test(url)) return 'ssh';
  return 'other';
}

export const resourcesSpec = z.strictObject({
  cpus: z.number().positive('must be a positive number of CPUs').max(1024).optional(),
  memory: sizeInput.optional(),
  disk: sizeInput.optional(),
});

export const jobSpec = z
  .strictObject({
    queue: queueName,
    namespace: namespaceName
      .optional()
      .describe('Whose job this is; default the submitter\'s own namespace, "user:NAME"'),
    repository: repositorySpec.optional(),
    files: z.record(workspaceFile, z.string()).optional().describe('Files written into the workspace before the steps'),
    steps: z.array(stepSpec).max(100, 'at most 100 steps'),
    resources: resourcesSpec.optional(),
    maxRuntime: durationInput.optional().describe('Wall-clock limit for the whole job, e.g. "30m"'),
    maxAttempts: z.number().int('must be a whole number').min(1).max(10).default(3),
    network: z
      .enum(['default', 'none'], {
        error: () => 'must be "default" (the executor\'s network) or "none" (no network at all)',
      })
      .optional()
      .describe('"none" runs every step without any network; executors may also force "none"'),
    secrets: z
      .array(secretName)
      .max(100, 'at most 100 secrets')
      .optional()
      .describe(
        "Names of secrets the steps use: each is looked up in the job's namespace, then global, and set in every step's env",
      ),
    dockerAuthConfig: staticDockerAuthConfigInput
      .optional()
      .describe(
        'Registry credentials for this job\'s images, in the docker config.json "auths" format. Never shown back.',
      ),
  })
  .superRefine((spec, ctx) => {
    const seen = new Map<string, number>();
    spec.steps.forEach((step, index) => {
      if (!step.key) return;
      const first = seen.get(step.key);
      if (first !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['steps', index, 'key'],
          message: `duplicates the key of steps[${first}]; step keys must be unique`,
        });
      }
      seen.set(step.key, index);
    });
    const named = new Map<string, number>();
    spec.secrets?.forEach((name, index) => {
      const first = named.get(name);
      if (first !== undefined)
        ctx.addIssue({ code: 'custom', path: ['secrets', index], message: `repeats secrets[${first}]` });
      named.set(name, index);
    });
    spec.steps.forEach((step, index) => {
      for (const name of Object.keys(step.env ?? {})) {
        if (named.has(name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['steps', index, 'env', name],
            message: `is also a secret the job uses; the secret sets it, so remove it from env`,
          });
        }
      }
    });
    checkRepositoryCredentials(spec.repository, named, ctx);
    const fileBytes = Object.values(spec.files ?? {}).reduce((n, content) => n + Buffer.byteLength(content), 0);
    if (fileBytes > MAX_FILES_BYTES) {
      ctx.addIssue({
        code: 'custom',
        path: ['files'],
        message: `hold ${fileBytes} bytes; the limit is ${MAX_FILES_BYTES}`,
      });
    }
  })
  .transform((spec) => ({
    ...spec,
    steps: spec.steps.map((step, index) => ({ ...step, key: step.key ?? `step-${index + 1}` })),
  }));

/** Repository credentials name secrets the job has, and suit the URL's transport. */
function checkRepositoryCredentials(
  repo: z.output<typeof repositorySpec> | undefined,
  secrets: Map<string, number>,
  ctx: z.RefinementCtx,
): void {
  if (!repo) return;
  const transport = repositoryTransport(repo.url);
  const issue = (field: string, message: string): void =>
    ctx.addIssue({ code: 'custom', path: ['repository', field], message });
  for (const field of ['passwordSecret', 'sshKeySecret'] as const) {
    const name = repo[field];
    if (name && !secrets.has(name)) issue(field, `names ${name}, which is not in the job's secrets; add it to secrets`);
  }
  if (repo.passwordSecret && transport !== 'http')
    issue('passwordSecret', 'is for https:// URLs; use sshKeySecret for ssh');
  if (repo.passwordSecret && /^[a-z]+:\/\/[^/]*@/i.test(repo.url))
    issue('passwordSecret', 'cannot be used with credentials in the URL; remove them from url');
  if (repo.username && !repo.passwordSecret)
    issue('username', 'is sent only with passwordSecret; add passwordSecret or remove username');
  if (repo.sshKeySecret && transport !== 'ssh')
    issue('sshKeySecret', 'is for ssh:// or user@host:path URLs; use passwordSecret for https');
  if (repo.knownHosts && transport !== 'ssh') issue('knownHosts', 'is for ssh:// or user@host:path URLs');
}

/** What a client writes. */
export type JobSpecInput = z.input<typeof jobSpec>;
/** The normalized spec: defaults applied, durations in ms, sizes in bytes, every step keyed. */
export type JobSpec = z.output<typeof jobSpec>;
export type StepSpec = JobSpec['steps'][number];

export interface FieldIssue {
  /** Where the problem is, e.g. `steps[0].run`. */
  field: string;
  message: string;
}

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(root)';
}

export function issuesOf(error: z.ZodError): FieldIssue[] {
  return error.issues.map((issue) => {
    // A bad record key (a file path, an env name) carries its own explanation inside.
    if (issue.code === 'invalid_key') {
      return { field: formatPath(issue.path), message: issue.issues.map((i) => i.message).join('; ') };
    }
    // Unknown keys are reported on their parent; name the key itself, which is what the user typed wrong.
    if (issue.code === 'unrecognized_keys') {
      const keys = issue.keys.map((k) => formatPath([...issue.path, k]));
      return { field: keys.join(', '), message: `unknown field${keys.length > 1 ? 's' : ''}; check the spelling` };
    }
    return { field: formatPath(issue.path), message: issue.message };
  });
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; issues: FieldIssue[] };

export function parseJobSpec(input: unknown): ParseResult<JobSpec> {
  const result = jobSpec.safeParse(input);
  return result.success ? { ok: true, value: result.data } : { ok: false, issues: issuesOf(result.error) };
}

/** Parses YAML or JSON text (JSON is YAML) into a plain value, reporting syntax errors with their position. */
export function parseSpecText(text: string): ParseResult<unknown> {
  try {
    const doc = YAML.parse(text, { prettyErrors: true });
    return { ok: true, value: doc };
  } catch (err) {
    return {
      ok: false,
      issues: [{ field: '(file)', message: `is not valid YAML or JSON: ${(err as Error).message}` }],
    };
  }
}

export function describeIssues(issues: FieldIssue[]): string {
  return issues.map((i) => `  ${i.field}: ${i.message}`).join('\n');
}
