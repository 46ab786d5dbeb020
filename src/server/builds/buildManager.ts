// The build manager: builds from submit to their final phase. Clients submit and cancel; the scheduler (one replica
// at a time, by lease) claims queued builds and starts a worker for each on the first control plane that accepts it;
// workers register with their token, heartbeat, report phases, stream the log and complete. Every change is one
// guarded step in the store (store/builds.ts), so workers may call any replica and late calls change nothing.
import { createHash, randomBytes } from 'node:crypto';
import {
  ARCHIVED_PHASES,
  MAX_BUILD_TAGS,
  NOT_CANCELLABLE_PHASES,
  parseImageRef,
  type BuildPack,
  type BuildPhase,
  type BuildRequest,
  type CompleteRequest,
  type TryOutcome,
  type WorkerPhase,
} from '../../core/builds.js';
import { dockerAuthConfig, loginSecrets, normalizeRegistry } from '../../core/dockerAuthConfig.js';
import { hashToken, newToken } from '../../core/tokens.js';
import { parseSize } from '../../core/units.js';
import { Redactor } from '../../executor/redactor.js';
import type { BuildRecord, BuildTryRecord, TryEnd } from '../../store/builds.js';
import type { Principal } from '../access.js';
import { requireNamespaceExists } from '../access.js';
import type { ServerContext } from '../context.js';
import { HttpError, badRequest } from '../httpError.js';
import { DOCKER_AUTH_CONFIG } from '../secrets/secrets.js';
import { BUILD_JOB_TOKEN_PREFIX, type BuildTokens } from './buildTokens.js';
import type { BuildMetrics } from './buildMetrics.js';
import type { BuildsConfig } from './buildsConfig.js';
import { EXECUTION_PREFIX, type ControlPlane } from './planes/controlPlane.js';

/** The scheduler's lease: one replica claims builds and expires workers at a time. */
const SCHEDULER_LEASE = 'build-scheduler';
const LEASE_TTL_MS = 15_000;
/** The scheduler looks at the queue this often, and at once when a build is submitted or a try ends here. */
export const SCHEDULER_PERIOD_MS = 1_000;
/** Extra life of a registration token beyond the plane's SETUP_TIME (Quay's SETUP_LEEWAY_SECONDS). */
const REGISTRATION_LEEWAY_S = 30;
/** Uploaded contexts no build named within this long are deleted, as are final builds' contexts, every minute. */
const UNUSED_CONTEXT_TTL_MS = 3_600_000;
const CONTEXT_PRUNE_EVERY_MS = 60_000;
/** Longer log lines are cut (buildah's lines are short; a RUN step may print anything). */
const MAX_LOG_LINE = 8 * 1024;
/** An internal error gives its try back, but never more than this many times per build (a worker that always fails). */
const MAX_RESTORED_TRIES = 3;

const USED_TOKEN =
  'this registration token was already used, or its try has ended: a worker registers once, with the token it was started with';

/** A build that cannot run at all (a secret it names was deleted, its upload is gone): it ends in error. */
class UnbuildableError extends Error {}

/** What the worker routes know about a caller after its job token checked out. */
export interface WorkerCall {
  build: BuildRecord;
  try: BuildTryRecord;
}

export class BuildManager {
  private readonly planes: Map<string, ControlPlane>;
  private readonly holder = `replica-${randomBytes(8).toString('hex')}`;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private prunedAt = 0;
  /** Whether this replica held the scheduler's lease at its last look. */
  private leading = false;
  /** The last log seq each build reached, as this replica saw it (the log's size bound). */
  private readonly logLines = new Map<number, number>();
  /** Each build's redactor, made from its secrets when first needed on this replica. */
  private readonly redactors = new Map<number, Promise<Redactor>>();

  constructor(
    private readonly ctx: ServerContext,
    readonly config: BuildsConfig,
    planes: ControlPlane[],
    private readonly tokens: BuildTokens,
    private readonly metrics: BuildMetrics,
    /** The URL a plane's workers reach this server at (SERVER_URL, or the plane's default for the listening port). */
    private readonly serverUrlFor: (plane: ControlPlane) => Promise<string>,
  ) {
    this.planes = new Map(planes.map((p) => [p.name, p]));
    // Per-build caches go when the build is final, however it ended (a worker's report, a cancel, an expiry).
    ctx.events.subscribe((event) => {
      if (event.type !== 'build.changed' || !event.final) return;
      this.redactors.delete(event.buildId);
      this.logLines.delete(event.buildId);
    });
  }

  private get store() {
    return this.ctx.store.builds;
  }

  get planeNames(): string[] {
    return [...this.planes.keys()];
  }

  // --- clients ------------------------------------------------------------------------------------------------------

  async submit(me: Principal, body: BuildRequest): Promise<BuildRecord> {
    const namespace = body.namespace ?? `user:${me.name}`;
    me.requireNamespace(namespace, 'namespace');
    await requireNamespaceExists(this.ctx.store.accounts, namespace, 'namespace');
    if (this.planes.size === 0)
      throw new HttpError(
        409,
        'this server runs no build workers: list control planes under builds.EXECUTORS in its config file (docs/builds.md)',
      );
    const missing = await this.ctx.secrets.missing(
      namespace,
      (body.secrets ?? []).filter((n) => n !== DOCKER_AUTH_CONFIG),
    );
    if (missing.length)
      throw badRequest('invalid build', [
        { field: 'secrets', message: `no secret ${missing.join(', ')} in ${namespace} or global` },
      ]);
    if ('git' in body.context && body.context.git.url.startsWith('file://') && !this.config.ALLOW_LOCAL_REPOSITORIES)
      throw badRequest('invalid build', [
        {
          field: 'context.git.url',
          message:
            "file:// URLs are paths on the worker's host and are refused (builds.ALLOW_LOCAL_REPOSITORIES: true allows them, for development)",
        },
      ]);
    const repository = parseImageRef(body.tags[0])!.repository;
    const commit = body.commit ?? ('git' in body.context ? body.context.git.commit : null);
    const created = await this.store.create(
      {
        namespace,
        repository,
        spec: body,
        commit,
        triesRemaining: this.config.MAX_TRIES,
        submittedBy: me.name,
        contextId: 'upload' in body.context ? body.context.upload : undefined,
      },
      Date.now(),
      this.config.MAXIMUM_QUEUED_BUILDS_COUNT,
    );
    if (created === 'over_cap')
      throw new HttpError(
        429,
        `${namespace} already has ${this.config.MAXIMUM_QUEUED_BUILDS_COUNT} builds waiting or running (builds.MAXIMUM_QUEUED_BUILDS_COUNT); wait for some to finish or cancel them`,
      );
    if (created === 'no_context')
      throw badRequest('invalid build', [
        {
          field: 'context.upload',
          message: `no unused uploaded context ${(body.context as { upload: string }).upload} in ${namespace}: upload it again (POST /api/v1/builds/contexts) in the same namespace; a context serves one build`,
        },
      ]);
    this.metrics.submitted.inc();
    this.changed(created);
    this.kick();
    return created;
  }

  /** Stores an uploaded tar.gz context; a build then names it. */
  async uploadContext(
    me: Principal,
    namespace: string,
    data: Buffer,
  ): Promise<{ id: string; bytes: number; sha256: string }> {
    me.requireNamespace(namespace, 'namespace');
    await requireNamespaceExists(this.ctx.store.accounts, namespace, 'namespace');
    const limit = parseSize(this.config.MAXIMUM_CONTEXT_SIZE)!;
    if (data.length > limit)
      throw new HttpError(
        413,
        `the context is ${data.length} bytes; this server takes at most ${limit} (builds.MAXIMUM_CONTEXT_SIZE)`,
      );
    // gzip's magic number: a plain tar or anything else is refused here, not by a worker later.
    if (data.length < 18 || data[0] !== 0x1f || data[1] !== 0x8b)
      throw new HttpError(400, 'the context must be a gzip-compressed tar archive (tar czf - -C DIR .)');
    const id = `ctx_${randomBytes(16).toString('hex')}`;
    const sha256 = createHash('sha256').update(data).digest('hex');
    await this.store.putContext({ id, namespace, sha256, data }, Date.now());
    return { id, bytes: data.length, sha256 };
  }

  /** The build, if `me` may see it (another namespace's answers like a missing one). */
  async visible(me: Principal, id: number): Promise<BuildRecord> {
    const build = await this.store.get(id);
    if (!build || !me.mayUse(build.namespace)) throw new HttpError(404, `no build ${id}`);
    return build;
  }

  async cancel(me: Principal, id: number): Promise<BuildRecord> {
    await this.visible(me, id);
    const result = await this.store.cancel(id, Date.now());
    if (!result.ok) {
      if (result.reason === 'missing') throw new HttpError(404, `no build ${id}`);
      if (result.reason === 'pushing')
        throw new HttpError(409, `build ${id} is pushing its image and can no longer be cancelled`);
      throw new HttpError(409, `build ${id} has already ended (${result.build?.phase})`);
    }
    await this.log(id, result.endedTry?.number ?? 0, 'system', `cancelled by ${me.name}`);
    this.metrics.finished.inc({ outcome: 'cancelled', plane: result.endedTry?.plane || 'none' });
    this.changed(result.build);
    if (result.endedTry) await this.stopWorker(result.endedTry);
    return result.build;
  }

  // --- workers ------------------------------------------------------------------------------------------------------

  /** Exchanges a registration token for the build pack (with the job token); refused once used or expired. */
  async register(registrationToken: string): Promise<BuildPack> {
    const reg = await this.tokens.verify(registrationToken);
    if ('refused' in reg)
      throw new HttpError(401, `${reg.refused}: a worker registers once, with the token it was started with`);
    const build = await this.store.get(reg.buildId);
    if (!build) throw new HttpError(401, 'the registration token names no build');
    const tryRow = (await this.store.listTries(build.id)).find((t) => t.number === reg.tryNumber);
    if (!tryRow || tryRow.registeredAt !== null || tryRow.endedAt !== null || tryRow.registrationJti !== reg.jti)
      throw new HttpError(401, USED_TOKEN);
    // The pack first: a build that cannot have one ends here, not by its worker's silence later.
    const jobToken = newToken(BUILD_JOB_TOKEN_PREFIX);
    let pack: { pack: BuildPack; secretNames: string[] };
    try {
      pack = await this.buildPack(build, reg.tryNumber, jobToken);
    } catch (err) {
      if (!(err instanceof UnbuildableError)) throw err;
      await this.endTry(tryRow, build, 'error', err.message);
      throw new HttpError(409, `build ${build.id} cannot run: ${err.message}`);
    }
    const now = Date.now();
    if (!(await this.store.register(reg.buildId, reg.tryNumber, reg.jti, hashToken(jobToken), now)))
      throw new HttpError(401, USED_TOKEN);
    this.metrics.registered.observe({ plane: tryRow.plane || 'none' }, (now - tryRow.startedAt) / 1000);
    await this.log(
      build.id,
      reg.tryNumber,
      'system',
      `worker ${tryRow.executionId ?? ''} registered (plane ${tryRow.plane})`,
    );
    if (pack.secretNames.length)
      await this.log(build.id, reg.tryNumber, 'system', `secrets given to the worker: ${pack.secretNames.join(', ')}`);
    return pack.pack;
  }

  /**
   * What the worker gets. Registry logins: the build's namespace's DOCKER_AUTH_CONFIG, with global's for other
   * registries only: a site-wide login may pull base images, never push into a repository (nor its build cache).
   */
  private async buildPack(
    build: BuildRecord,
    tryNumber: number,
    jobToken: string,
  ): Promise<{ pack: BuildPack; secretNames: string[] }> {
    const spec = build.spec;
    const named = (spec.secrets ?? []).filter((n) => n !== DOCKER_AUTH_CONFIG);
    const values = await this.ctx.secrets.resolveNamed(build.namespace, named);
    const lost = named.filter((n) => !values.has(n));
    if (lost.length)
      throw new UnbuildableError(`secrets ${lost.join(', ')} no longer exist in ${build.namespace} or global`);
    const target = parseImageRef(spec.tags[0])!.registry;
    const logins = await this.ctx.secrets.resolveScopes(build.namespace, DOCKER_AUTH_CONFIG);
    const auths: Record<string, unknown> = {};
    for (const [json, scope] of [
      [logins.global, 'global'],
      [logins.own, 'own'],
    ] as const) {
      const parsed = json === undefined ? undefined : dockerAuthConfig.safeParse(safeJson(json));
      for (const [registry, cred] of Object.entries(parsed?.success ? (parsed.data.auths ?? {}) : {})) {
        if (scope === 'global' && normalizeRegistry(registry) === normalizeRegistry(target)) continue;
        auths[registry] = cred;
      }
    }
    const context: BuildPack['context'] =
      'git' in spec.context
        ? { kind: 'git', url: spec.context.git.url, commit: spec.context.git.commit }
        : await (async () => {
            const ctx = await this.store.getContextOfBuild(build.id);
            if (!ctx) throw new UnbuildableError(`its uploaded context is gone`);
            return { kind: 'upload' as const, bytes: ctx.data.length, sha256: ctx.sha256 };
          })();
    const registries = [...new Set(spec.tags.map((t) => parseImageRef(t)!.registry))];
    const insecure = registries.filter(
      (r) => /^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$/.test(r) || this.config.INSECURE_REGISTRIES.includes(r),
    );
    const secretNames = [...values.keys(), ...(Object.keys(auths).length ? [DOCKER_AUTH_CONFIG] : [])].sort();
    return {
      secretNames,
      pack: {
        buildId: build.id,
        try: tryNumber,
        jobToken,
        heartbeatIntervalMs: Math.max(500, Math.floor((this.config.HEARTBEAT_TIMEOUT * 1000) / 6)),
        heartbeatTimeoutMs: this.config.HEARTBEAT_TIMEOUT * 1000,
        context,
        dockerfile: spec.dockerfile,
        tags: spec.tags,
        buildArgs: spec.buildArgs ?? {},
        dockerAuthConfig: Object.keys(auths).length ? JSON.stringify({ auths }) : null,
        secrets: Object.fromEntries(values),
        insecureRegistries: [...new Set([...insecure, ...this.config.INSECURE_REGISTRIES])],
        cacheRepository: this.config.LAYER_CACHE ? `${build.repository}/buildcache` : null,
      },
    };
  }

  /** A worker's call, refused (fencing) once its try has ended or its build is final. */
  current(call: WorkerCall): WorkerCall {
    if (call.try.endedAt !== null || call.build.final)
      throw new HttpError(
        409,
        `try ${call.try.number} of build ${call.build.id} has ended (${call.try.outcome ?? call.build.phase}): stop`,
      );
    return call;
  }

  async heartbeat(call: WorkerCall): Promise<{ stop: boolean }> {
    const alive = await this.store.heartbeat(call.build.id, call.try.number, Date.now());
    return { stop: !alive };
  }

  async setPhase(call: WorkerCall, phase: WorkerPhase, detail?: string): Promise<void> {
    if (!(await this.store.setPhase(call.build.id, call.try.number, phase, Date.now())))
      throw new HttpError(409, `try ${call.try.number} of build ${call.build.id} is no longer current: stop`);
    if (detail) await this.log(call.build.id, call.try.number, 'system', await this.redact(call.build, detail));
    await this.store.heartbeat(call.build.id, call.try.number, Date.now());
    this.changed({ id: call.build.id, phase, final: false });
  }

  async appendLog(call: WorkerCall, lines: string[]): Promise<void> {
    const redactor = await this.redactorOf(call.build);
    const now = Date.now();
    const id = call.build.id;
    // The log's size is bounded: past MAXIMUM_LOG_LINES entries one note says so and the rest is dropped (each line
    // is cut at MAX_LOG_LINE characters). The count is this replica's view, refreshed from each append's answer.
    const seen = this.logLines.get(id) ?? 0;
    const room = this.config.MAXIMUM_LOG_LINES - seen;
    if (room <= 0) {
      await this.store.heartbeat(id, call.try.number, now);
      return;
    }
    const kept = lines.slice(0, room).map((line) => ({
      at: now,
      try: call.try.number,
      kind: 'log' as const,
      text: redactor.redact(line.length > MAX_LOG_LINE ? `${line.slice(0, MAX_LOG_LINE)} [line cut]` : line),
    }));
    const stored = await this.store.appendLog(id, kept);
    const last = stored[stored.length - 1]?.seq ?? seen;
    this.logLines.set(id, last);
    if (last >= this.config.MAXIMUM_LOG_LINES)
      await this.log(
        id,
        call.try.number,
        'system',
        `the log reached MAXIMUM_LOG_LINES (${this.config.MAXIMUM_LOG_LINES}): the rest of the output is dropped`,
      );
    // A log line is a sign of life, as in Quay.
    await this.store.heartbeat(call.build.id, call.try.number, now);
    this.ctx.events.emit({ type: 'build.output', buildId: call.build.id });
  }

  async context(call: WorkerCall): Promise<Buffer> {
    const ctx = await this.store.getContextOfBuild(call.build.id);
    if (!ctx) throw new HttpError(404, `build ${call.build.id} has no uploaded context`);
    return ctx.data;
  }

  async complete(call: WorkerCall, body: CompleteRequest): Promise<void> {
    const { build } = call;
    const now = Date.now();
    if (body.outcome === 'complete') {
      const pushes = build.spec.tags.map((t) => {
        const ref = parseImageRef(t)!;
        return {
          image: ref.repository,
          tag: ref.tag,
          digest: body.digest,
          repository: 'git' in build.spec.context ? build.spec.context.git.url : `upload:${build.spec.context.upload}`,
          commit: build.commit,
          buildId: build.id,
          at: now,
        };
      });
      const ok = await this.endTry(call.try, build, 'complete', null, { digest: body.digest, pushes });
      if (!ok) throw new HttpError(409, `try ${call.try.number} of build ${build.id} has ended: stop`);
      await this.log(build.id, call.try.number, 'system', `pushed ${build.spec.tags.join(', ')} at ${body.digest}`);
      for (const e of await this.store.listImagePushes({ buildId: build.id, limit: MAX_BUILD_TAGS }))
        this.ctx.events.emit({ type: 'image.pushed', ...e });
      return;
    }
    const message = await this.redact(build, body.message);
    const ok = await this.endTry(call.try, build, body.outcome, message);
    if (!ok) throw new HttpError(409, `try ${call.try.number} of build ${build.id} has ended: stop`);
  }

  // --- the scheduler ------------------------------------------------------------------------------------------------

  start(): void {
    // A server with no planes can run no build: no lease to keep, no write a second for nothing.
    if (this.planes.size === 0) return;
    this.stopped = false;
    this.timer = setInterval(() => this.kick(), SCHEDULER_PERIOD_MS);
    this.kick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking;
    await this.store.releaseLease(SCHEDULER_LEASE, this.holder).catch(() => undefined);
    await Promise.all([...this.planes.values()].map((p) => p.close().catch(() => undefined)));
  }

  /** Runs the scheduler soon (at once if idle; once more after the current pass if one runs). */
  kick(): void {
    if (this.stopped) return;
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = this.tick()
      .catch((err) => this.ctx.log.error({ err }, 'the build scheduler failed; it tries again'))
      .finally(() => {
        this.ticking = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** One pass: expire silent workers, stop the workers of ended tries, start workers for queued builds. */
  async tick(): Promise<void> {
    const now = Date.now();
    if (this.ctx.storage.current) return;
    const leading = await this.store.acquireLease(SCHEDULER_LEASE, this.holder, now, LEASE_TTL_MS);
    if (leading !== this.leading) {
      this.leading = leading;
      this.ctx.log.info(
        { holder: this.holder },
        leading ? 'this replica now schedules builds' : 'another replica schedules builds',
      );
    }
    if (!leading) return;
    for (const t of await this.store.expiredTries(
      now,
      this.config.HEARTBEAT_TIMEOUT * 1000,
      this.config.MACHINE_MAX_TIME * 1000,
    )) {
      const build = await this.store.get(t.buildId);
      if (!build) continue;
      const overtime = now - t.startedAt > this.config.MACHINE_MAX_TIME * 1000;
      const why = !t.plane
        ? 'no worker was started for it (its scheduler stopped before it could)'
        : overtime
          ? `the try ran longer than MACHINE_MAX_TIME (${this.config.MACHINE_MAX_TIME}s)`
          : t.registeredAt === null
            ? `the worker did not register within plane ${t.plane}'s SETUP_TIME`
            : `no heartbeat from the worker for ${this.config.HEARTBEAT_TIMEOUT}s`;
      await this.endTry(t, build, 'expired', why, {
        failedPlane: t.registeredAt === null && t.plane && !overtime ? t.plane : undefined,
      });
    }
    for (const t of await this.store.unstoppedTries(20)) await this.stopWorker(t);
    if (now - this.prunedAt > CONTEXT_PRUNE_EVERY_MS) {
      this.prunedAt = now;
      await this.store.pruneContexts(now - UNUSED_CONTEXT_TTL_MS);
    }
    while (!this.stopped) {
      // Starting workers can take a while (a plane's start script): the lease is renewed before each claim.
      if (!(await this.store.acquireLease(SCHEDULER_LEASE, this.holder, Date.now(), LEASE_TTL_MS))) break;
      const claim = await this.store.claimNext(Date.now(), this.config.ALLOWED_WORKER_COUNT);
      if (!claim) break;
      this.metrics.queueWait.observe((Date.now() - claim.build.createdAt) / 1000);
      this.changed(claim.build);
      await this.launch(claim.build, claim.tryNumber);
    }
  }

  /** Starts a worker for try `n` on the first plane that takes it, in the config's order. */
  private async launch(build: BuildRecord, n: number): Promise<void> {
    const all = [...this.planes.values()];
    const eligible = all.filter((p) => p.config.MINIMUM_RETRY_THRESHOLD <= build.triesRemaining);
    for (const p of all.filter((p) => !eligible.includes(p))) {
      this.metrics.fallbacks.inc({ plane: p.name, reason: 'retry_threshold' });
      await this.log(
        build.id,
        n,
        'system',
        `plane ${p.name} skipped: it needs ${p.config.MINIMUM_RETRY_THRESHOLD} tries left after this one, the build has ${build.triesRemaining}`,
      );
    }
    // A plane whose worker never registered for this build goes last, so the next try falls through to another.
    const failed = new Set(build.failedPlanes);
    const order = [...eligible.filter((p) => !failed.has(p.name)), ...eligible.filter((p) => failed.has(p.name))];
    for (const [i, plane] of order.entries()) {
      const executionId = `${EXECUTION_PREFIX}${build.id}-${n}-${randomBytes(3).toString('hex')}`;
      const setupS = plane.config.SETUP_TIME;
      const { token, jti } = await this.tokens.issue(build.id, n, setupS + REGISTRATION_LEEWAY_S);
      const recorded = await this.store.setTryWorker(build.id, n, {
        plane: plane.name,
        executionId,
        registrationJti: jti,
        setupDeadline: Date.now() + setupS * 1000,
      });
      if (!recorded) return; // cancelled meanwhile
      const next = order[i + 1];
      try {
        await plane.start({
          buildId: build.id,
          tryNumber: n,
          executionId,
          registrationToken: token,
          serverUrl: await this.serverUrlFor(plane),
          maxBuildS: this.config.MACHINE_MAX_TIME,
        });
        this.metrics.started.inc({ plane: plane.name });
        await this.log(
          build.id,
          n,
          'system',
          `try ${n}: worker ${executionId} started on plane ${plane.name} (${plane.config.EXECUTOR})`,
        );
        // Cancelled while it started: its stop may have come before the worker existed.
        const now = (await this.store.listTries(build.id)).find((t) => t.number === n);
        if (now?.endedAt != null) await this.stopWorker(now);
        return;
      } catch (err) {
        // A start that failed half-way (a timed-out script, a Job created before the call timed out) is undone.
        await plane.stop(executionId).catch(() => undefined);
        this.metrics.fallbacks.inc({ plane: plane.name, reason: 'start_failed' });
        const why = err instanceof Error ? err.message : String(err);
        await this.log(
          build.id,
          n,
          'system',
          `plane ${plane.name} could not start a worker: ${why}${next ? `; falling back to plane ${next.name}` : ''}`,
        );
        this.ctx.log.warn({ build: build.id, plane: plane.name, err: why }, 'a build plane could not start a worker');
      }
    }
    await this.endTry(
      { buildId: build.id, number: n } as BuildTryRecord,
      build,
      'unscheduled',
      order.length
        ? 'no control plane could start a worker'
        : 'no control plane may run this try (MINIMUM_RETRY_THRESHOLD)',
    );
  }

  /**
   * Ends a try with Quay's rules: complete and error are final; cancelled is final; an expired or unscheduled try
   * is spent (the build is retried while tries remain, else ends in internalerror); an incomplete one (the worker's
   * internal error) gives its try back.
   */
  private async endTry(
    t: Pick<BuildTryRecord, 'buildId' | 'number'> & Partial<BuildTryRecord>,
    build: BuildRecord,
    outcome: TryOutcome,
    message: string | null,
    extra: Pick<TryEnd, 'digest' | 'pushes' | 'failedPlane'> = {},
  ): Promise<boolean> {
    const now = Date.now();
    let end: TryEnd;
    if (outcome === 'complete' || outcome === 'error' || outcome === 'cancelled') {
      end = { outcome, message, phase: outcome, final: true, ...extra };
    } else {
      // Tries given back so far: the workers started beyond those spent.
      const restored = build.tries - (this.config.MAX_TRIES - build.triesRemaining);
      const restore = outcome === 'incomplete' && restored < MAX_RESTORED_TRIES;
      const left = build.triesRemaining + (restore ? 1 : 0);
      end = {
        outcome,
        message,
        phase: 'internalerror',
        final: left <= 0,
        restoreTry: restore,
        availableAt: now + this.config.RETRY_AFTER * 1000,
        ...extra,
      };
    }
    if (!(await this.store.endTry(t.buildId, t.number, end, now))) return false;
    const plane = t.plane || build.plane || 'none';
    const retry = !end.final
      ? `; retried in ${this.config.RETRY_AFTER}s (${build.triesRemaining + (end.restoreTry ? 1 : 0)} tries left)`
      : '';
    if (message)
      await this.log(t.buildId, t.number, 'system', `try ${t.number} ended (${outcome}): ${message}${retry}`);
    if (outcome === 'expired') this.metrics.expired.inc({ plane });
    if (end.final) {
      this.metrics.finished.inc({ outcome: end.phase, plane });
      if (build.startedAt !== null)
        this.metrics.duration.observe({ outcome: end.phase, plane }, (now - build.startedAt) / 1000);
      this.redactors.delete(build.id);
      this.logLines.delete(build.id);
    }
    this.changed({ id: t.buildId, phase: end.phase, final: end.final });
    this.kick();
    return true;
  }

  private async stopWorker(t: BuildTryRecord): Promise<void> {
    const plane = this.planes.get(t.plane);
    if (t.executionId && plane) {
      try {
        await plane.stop(t.executionId);
      } catch (err) {
        this.ctx.log.warn(
          { build: t.buildId, plane: t.plane, err: (err as Error).message },
          'could not stop a build worker; trying again',
        );
        return;
      }
    }
    await this.store.markWorkerStopped(t.buildId, t.number);
  }

  // --- helpers ------------------------------------------------------------------------------------------------------

  private changed(build: { id: number; phase: BuildPhase; final: boolean }): void {
    this.ctx.events.emit({
      type: 'build.changed',
      buildId: build.id,
      phase: build.phase,
      final: build.final || ARCHIVED_PHASES.has(build.phase),
    });
  }

  private async log(buildId: number, tryNumber: number, kind: 'system', text: string): Promise<void> {
    await this.store.appendLog(buildId, [{ at: Date.now(), try: tryNumber, kind, text }]);
    this.ctx.events.emit({ type: 'build.output', buildId });
  }

  private redactorOf(build: BuildRecord): Promise<Redactor> {
    let r = this.redactors.get(build.id);
    if (!r) {
      r = (async () => {
        const redactor = new Redactor();
        const named = (build.spec.secrets ?? []).filter((n) => n !== DOCKER_AUTH_CONFIG);
        for (const [name, value] of await this.ctx.secrets.resolveNamed(build.namespace, named))
          redactor.add(value, `[${name}]`);
        // Both logins, the namespace's and global's: either may have reached the worker.
        const logins = await this.ctx.secrets.resolveScopes(build.namespace, DOCKER_AUTH_CONFIG);
        for (const value of [logins.own, logins.global])
          for (const s of value === undefined ? [] : loginSecrets(value)) redactor.add(s, `[${DOCKER_AUTH_CONFIG}]`);
        return redactor;
      })();
      r.catch(() => this.redactors.delete(build.id));
      this.redactors.set(build.id, r);
    }
    return r;
  }

  private async redact(build: BuildRecord, text: string): Promise<string> {
    return (await this.redactorOf(build)).redact(text);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
