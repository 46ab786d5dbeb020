// Image builds: what a client submits, the phases a build goes through (Quay's names), and the bodies of the build
// worker protocol (/api/build-worker/v1). Shared by the server, the worker, the CLI and the web UI.
import { z } from 'zod';
import { namespaceName, secretName } from './jobSpec.js';

export const BUILD_WORKER_API_PREFIX = '/api/build-worker/v1';

export * from './buildPhases.js';
import { BUILD_PHASES, TRY_OUTCOMES, WORKER_PHASES } from './buildPhases.js';

const GIT_URL_PATTERN = /^(https?:\/\/|ssh:\/\/|git:\/\/|file:\/\/)\S+$/;
const COMMIT_PATTERN = /^[0-9a-f]{7,64}$/;
/** REGISTRY/PATH:TAG with an explicit registry host (a dot, a colon or localhost), so no push goes to a default one. */
const IMAGE_REF_PATTERN =
  /^((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)(?::\d{1,5})?)\/([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*):([A-Za-z0-9_][A-Za-z0-9._-]{0,127})$/;
/** A relative path inside the context: no absolute paths, no "..", no option-looking names. */
const CONTEXT_PATH = z
  .string()
  .min(1)
  .max(1024)
  .refine(
    (p) => !p.startsWith('/') && !p.startsWith('-') && !p.split('/').includes('..'),
    'must be a relative path inside the context (no leading "/" or "-", no "..")',
  );

/** Whether a URL carries credentials beyond a bare user name (ssh://git@host is fine; https://user:token@host is not). */
function hasPassword(url: string): boolean {
  try {
    const u = new URL(url);
    return u.password !== '' || (/^https?:$/.test(u.protocol) && u.username !== '');
  } catch {
    return false;
  }
}

export interface ImageRef {
  registry: string;
  /** The path in the registry, e.g. team/app. */
  path: string;
  tag: string;
  /** REGISTRY/PATH, the unit builds are serialised on. */
  repository: string;
}

export function parseImageRef(ref: string): ImageRef | undefined {
  const m = IMAGE_REF_PATTERN.exec(ref);
  if (!m) return undefined;
  const [, registry, path, tag] = m;
  if (!registry.includes('.') && !registry.includes(':') && registry !== 'localhost') return undefined;
  return { registry, path, tag, repository: `${registry}/${path}` };
}

export const imageTag = z
  .string()
  .max(255)
  .refine(
    (ref) => parseImageRef(ref) !== undefined,
    'must be a full image reference REGISTRY/PATH:TAG with the registry host, e.g. registry.example.com:5000/team/app:1.2',
  );

export const buildContext = z.union([
  z.strictObject({
    git: z.strictObject({
      url: z
        .string()
        .max(2048)
        .regex(GIT_URL_PATTERN, 'must be a git URL (https://, ssh://, git:// or file://)')
        .refine(
          (url) => !hasPassword(url),
          'must not hold a password or token: the URL is stored and shown with the build; for a private repository, upload its checkout instead (dockhand build submit --context DIR)',
        ),
      commit: z.string().regex(COMMIT_PATTERN, 'must be a full or abbreviated commit SHA in lower-case hex'),
    }),
  }),
  z.strictObject({
    upload: z
      .string()
      .regex(/^ctx_[0-9a-f]{32}$/, 'must be the id POST /api/v1/builds/contexts answered')
      .describe('An uploaded tar.gz context (POST /api/v1/builds/contexts)'),
  }),
]);

export const MAX_BUILD_TAGS = 20;

export const buildRequest = z
  .strictObject({
    namespace: namespaceName.optional().describe('Whose build this is; default the submitter\'s "user:NAME"'),
    context: buildContext,
    dockerfile: CONTEXT_PATH.default('Dockerfile').describe('The Dockerfile, relative to the context'),
    tags: z
      .array(imageTag)
      .min(1, 'name at least one tag to push')
      .max(MAX_BUILD_TAGS, `at most ${MAX_BUILD_TAGS} tags`),
    buildArgs: z
      .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a build argument name'), z.string().max(4096))
      .optional(),
    secrets: z
      .array(secretName)
      .max(20)
      .optional()
      .describe(
        'Secrets of the namespace the build may use: DOCKER_AUTH_CONFIG logs in to registries (used whenever it exists); others are mounted for RUN --mount=type=secret,id=NAME',
      ),
    commit: z
      .string()
      .regex(COMMIT_PATTERN, 'must be a commit SHA in lower-case hex')
      .optional()
      .describe("The commit this image is built from, for the image-pushed event; default: the git context's"),
  })
  .superRefine((body, ctx) => {
    const repos = new Set(body.tags.map((t) => parseImageRef(t)?.repository));
    if (repos.size > 1)
      ctx.addIssue({
        code: 'custom',
        path: ['tags'],
        message: `all tags must name one repository (found ${[...repos].join(', ')}); submit one build per repository`,
      });
  });
export type BuildRequest = z.output<typeof buildRequest>;

const time = z.number().int().describe('milliseconds since the epoch');

export const buildView = z.object({
  id: z.number().int().positive(),
  namespace: z.string(),
  repository: z.string().describe('REGISTRY/PATH the tags push to; one build of it runs at a time'),
  phase: z.enum(BUILD_PHASES),
  final: z.boolean().describe('true once the phase can no longer change'),
  spec: z.object({
    context: buildContext,
    dockerfile: z.string(),
    tags: z.array(z.string()),
    buildArgs: z.record(z.string(), z.string()).optional(),
    secrets: z.array(z.string()).optional(),
    commit: z.string().optional(),
  }),
  commit: z.string().nullable(),
  triesRemaining: z.number().int().nonnegative(),
  tries: z.number().int().nonnegative().describe('workers started so far'),
  plane: z.string().nullable().describe('the control plane of the current or last worker'),
  digest: z.string().nullable().describe('the pushed manifest digest'),
  message: z.string().nullable().describe('why it failed, when it did'),
  submittedBy: z.string(),
  cancelRequested: z.boolean(),
  cancellable: z.boolean().describe('whether cancel is allowed now (not final, not pushing)'),
  createdAt: time,
  startedAt: time.nullable(),
  finishedAt: time.nullable(),
  phases: z.array(z.object({ phase: z.enum(BUILD_PHASES), at: time })).describe('every phase change, in order'),
});
export type BuildView = z.infer<typeof buildView>;

export const buildTryView = z.object({
  number: z.number().int().positive(),
  plane: z.string(),
  executionId: z.string().nullable(),
  startedAt: time,
  registeredAt: time.nullable(),
  lastHeartbeatAt: time.nullable(),
  endedAt: time.nullable(),
  outcome: z.enum(TRY_OUTCOMES).nullable(),
  message: z.string().nullable(),
});

export const buildLogEntry = z.object({
  seq: z.number().int().nonnegative(),
  at: time,
  try: z.number().int().nonnegative(),
  kind: z.enum(['phase', 'log', 'system']),
  text: z.string(),
  phase: z.enum(BUILD_PHASES).optional(),
});
export type BuildLogEntry = z.infer<typeof buildLogEntry>;

export const imagePushedEvent = z.object({
  id: z.number().int().positive(),
  image: z.string().describe('REGISTRY/PATH'),
  tag: z.string(),
  digest: z.string(),
  repository: z.string().describe('the repository the image was built from (git URL), or the upload'),
  commit: z.string().nullable(),
  buildId: z.number().int().positive().nullable(),
  at: time,
});
export type ImagePushedEvent = z.infer<typeof imagePushedEvent>;

/** The events of GET /api/v1/builds/:id/logs?follow=true, in order: entries as they come, the build when it changes. */
export const buildStreamEvent = z.discriminatedUnion('event', [
  z.object({ event: z.literal('entry'), data: buildLogEntry }),
  z.object({
    event: z.literal('build'),
    data: z.object({
      phase: z.enum(BUILD_PHASES),
      final: z.boolean(),
      digest: z.string().nullable(),
      message: z.string().nullable(),
      tries: z.number().int(),
      triesRemaining: z.number().int(),
      plane: z.string().nullable(),
    }),
  }),
  z.object({ event: z.literal('end'), data: z.object({ phase: z.enum(BUILD_PHASES), digest: z.string().nullable() }) }),
]);
export type BuildStreamEvent = z.infer<typeof buildStreamEvent>;

export const buildResponses = {
  build: z.object({ build: buildView }),
  buildDetail: z.object({ build: buildView, tries: z.array(buildTryView) }),
  builds: z.object({
    builds: z.array(buildView),
    nextBefore: z.number().int().nullable().describe('the next page: ?before=this; null on the last page'),
  }),
  logs: z.object({
    entries: z.array(buildLogEntry),
    final: z.boolean(),
    next: z.number().int().nullable().describe('more entries: ?after=this; null when this page reached the end'),
  }),
  context: z.object({ id: z.string(), bytes: z.number().int(), sha256: z.string() }),
  imageEvents: z.object({ events: z.array(imagePushedEvent) }),
};

// --- the build worker protocol -------------------------------------------------------------------------------------

export const registerRequest = z.strictObject({ registrationToken: z.string().min(1).max(4096) });

export const buildPack = z.object({
  buildId: z.number().int().positive(),
  try: z.number().int().positive(),
  jobToken: z.string(),
  /** The worker heartbeats at least this often; the server expires it after heartbeatTimeoutMs of silence. */
  heartbeatIntervalMs: z.number().int().positive(),
  heartbeatTimeoutMs: z.number().int().positive(),
  context: z.union([
    z.object({ kind: z.literal('git'), url: z.string(), commit: z.string() }),
    z.object({ kind: z.literal('upload'), bytes: z.number().int(), sha256: z.string() }),
  ]),
  dockerfile: z.string(),
  tags: z.array(z.string()),
  buildArgs: z.record(z.string(), z.string()),
  /** docker config.json {"auths": …}, from DOCKER_AUTH_CONFIG; never logged. */
  dockerAuthConfig: z.string().nullable(),
  /** Other secrets, for RUN --mount=type=secret,id=NAME. */
  secrets: z.record(z.string(), z.string()),
  /** Registries reached over plain HTTP (loopback ones, and the config's INSECURE_REGISTRIES). */
  insecureRegistries: z.array(z.string()),
  /**
   * Where the builder keeps the repository's intermediate layers (buildah --cache-from/--cache-to), so a build reuses
   * the layers of the repository's earlier builds although each worker starts empty; null: no layer reuse.
   */
  cacheRepository: z.string().nullable(),
});
export type BuildPack = z.infer<typeof buildPack>;

export const phaseRequest = z.strictObject({
  phase: z.enum(WORKER_PHASES),
  detail: z.string().max(1024).optional(),
});

export const MAX_WORKER_LOG_LINES = 1000;
export const workerLogRequest = z.strictObject({
  lines: z
    .array(z.string().max(64 * 1024))
    .min(1)
    .max(MAX_WORKER_LOG_LINES),
});

export const completeRequest = z.union([
  z.strictObject({
    outcome: z.literal('complete'),
    digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be a sha256 manifest digest'),
  }),
  z.strictObject({
    outcome: z.literal('error').describe('the Dockerfile failed: final, no retry'),
    message: z.string().max(4096),
  }),
  z.strictObject({
    outcome: z.literal('incomplete').describe('the worker could not do its part (context, registry): retried'),
    message: z.string().max(4096),
  }),
]);
export type CompleteRequest = z.infer<typeof completeRequest>;

export const heartbeatResponse = z.object({
  /** The build was cancelled, or this try is no longer current: the worker stops. */
  stop: z.boolean(),
});
