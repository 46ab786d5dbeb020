// A coordinator: its subsystems composed over one store. Each subsystem brings its routes and, if it has any, the
// background work it starts and stops; they share the ServerContext (the store's reads, the ledger that makes every
// change and emits its event, the event bus, secrets, metrics, storage health). `dockhand server` (server.ts) runs
// one on a socket; tests run one in-process. New subsystems (builds, rollouts) join the list in createCoordinator.
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { Store } from '../store/store.js';
import { buildApp, type AppOptions } from './app.js';
import type { ServerContext } from './context.js';
import { DispatchService } from './dispatch/dispatchService.js';
import { startReaper } from './dispatch/reaper.js';
import { DomainEvents } from './events/domainEvents.js';
import { CLUSTER_FALLBACK_POLL_MS, relayWakeups } from './events/relay.js';
import { Wakeups } from './events/wakeups.js';
import type { RouteDef } from './http.js';
import { JobLedger } from './jobs/jobLedger.js';
import { JobService } from './jobs/jobService.js';
import { ServerMetrics } from './metrics.js';
import { openApiDocument } from './openapi.js';
import { accountRoutes } from './routes/accountRoutes.js';
import { executorRoutes } from './routes/executorRoutes.js';
import { jobRoutes } from './routes/jobRoutes.js';
import { secretRoutes } from './routes/secretRoutes.js';
import { systemRoutes } from './routes/systemRoutes.js';
import type { Secrets } from './secrets/secrets.js';
import { StorageHealth } from './storageHealth.js';
import { BuildManager } from './builds/buildManager.js';
import { BuildMetrics } from './builds/buildMetrics.js';
import { buildRoutes } from './builds/buildRoutes.js';
import { buildsConfig, type BuildsConfig } from './builds/buildsConfig.js';
import { BuildTokens } from './builds/buildTokens.js';
import type { ControlPlane } from './builds/planes/controlPlane.js';
import { createPlane, serverUrlFor } from './builds/planes/index.js';

/** A part of the coordinator: its routes, and what it runs in the background between start and stop. */
export interface Subsystem {
  name: string;
  routes: RouteDef<any, any>[];
  start?(): void | Promise<void>;
  stop?(): void | Promise<void>;
}

export interface CoordinatorOptions {
  /** Opened and migrated; the caller closes it after stop(). */
  store: Store;
  secrets: Secrets;
  config: ServerContext['config'];
  log: FastifyBaseLogger;
  /** Where SQLite keeps its file, watched for free space (none for PostgreSQL), and the least free space to keep. */
  storage?: { dataDir?: string; minFreeBytes: number };
  http?: AppOptions;
  /** The wake-ups held requests wait on (tests pass one that counts them). */
  wakeups?: Wakeups;
  /** The build manager's settings (the config file's `builds:`); default: no control planes. */
  builds?: BuildsConfig;
  /** Control planes to use instead of those the settings name (tests). */
  planes?: ControlPlane[];
}

export interface Coordinator {
  app: FastifyInstance;
  routes: RouteDef<any, any>[];
  context: ServerContext;
  jobs: JobService;
  dispatch: DispatchService;
  builds: BuildManager;
  /** Starts every subsystem's background work (and, on PostgreSQL, the relay of wake-ups between replicas). */
  start(): Promise<void>;
  /** Ends held requests, then stops what start() started; the store stays open. */
  stop(): Promise<void>;
}

/** Connections a client opened without a request yet would keep a stopping server up until the headers timeout. */
const CLOSE_GRACE_MS = 2_000;

export function createCoordinator(options: CoordinatorOptions): Coordinator {
  const { store, secrets, config, log } = options;
  const events = new DomainEvents((err, event) =>
    log.error({ err, event: event.type }, 'a domain event subscriber failed'),
  );
  // Replicas relay wake-ups (relay.ts); a notification lost while a connection was down costs at most this long.
  const wakeups = options.wakeups ?? new Wakeups(store.listen ? { maxWaitMs: CLUSTER_FALLBACK_POLL_MS } : {});
  wakeups.follow(events);
  const metrics = new ServerMetrics(store);
  const storage = new StorageHealth({
    store,
    log,
    dataDir: options.storage?.dataDir,
    minFreeBytes: options.storage?.minFreeBytes ?? 0,
    gauge: metrics.storageHealthy,
  });
  const closing = new AbortController();
  const context: ServerContext = {
    store,
    ledger: new JobLedger(store, events),
    events,
    wakeups,
    metrics,
    secrets,
    storage,
    config,
    log,
    closing: closing.signal,
  };
  const jobs = new JobService(context);
  const dispatch = new DispatchService(context);
  const buildSettings = options.builds ?? buildsConfig.parse(undefined);
  const planes = options.planes ?? buildSettings.EXECUTORS.map(createPlane);
  const builds = new BuildManager(
    context,
    buildSettings,
    planes,
    new BuildTokens(secrets.keyring),
    new BuildMetrics(metrics.registry, store, planes),
    (plane) => {
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      return serverUrlFor(plane, { port, https: Boolean(options.http?.https) });
    },
  );

  const routes: RouteDef<any, any>[] = [];
  let reaper: { stop(): void } | undefined;
  let relay: { close(): Promise<void> } | undefined;
  const subsystems: Subsystem[] = [
    {
      name: 'storage health',
      routes: [],
      start: async () => {
        await storage.check();
        storage.start();
      },
      stop: () => storage.stop(),
    },
    {
      name: 'replica relay',
      routes: [],
      start: async () => {
        relay = await relayWakeups(store, wakeups, log);
      },
      stop: () => relay?.close(),
    },
    {
      name: 'dispatch',
      routes: executorRoutes(context, dispatch),
      start: () => {
        reaper = startReaper(context, Date.now());
      },
      stop: () => reaper?.stop(),
    },
    { name: 'jobs', routes: jobRoutes(context, jobs) },
    { name: 'accounts', routes: accountRoutes(context) },
    { name: 'secrets', routes: secretRoutes(context) },
    {
      name: 'builds',
      routes: buildRoutes(context, builds),
      start: () => builds.start(),
      stop: () => builds.stop(),
    },
    { name: 'system', routes: systemRoutes(context, () => openApiDocument(routes)) },
  ];
  routes.push(...subsystems.flatMap((s) => s.routes));
  const app = buildApp(
    routes,
    { store, storage, executorsAccessToken: config.executorsAccessToken },
    log,
    options.http,
  );
  app.addHook('preClose', async () => closing.abort());

  let started: Subsystem[] = [];
  return {
    app,
    routes,
    context,
    jobs,
    dispatch,
    builds,
    async start() {
      for (const subsystem of subsystems) {
        await subsystem.start?.();
        started.push(subsystem);
      }
    },
    async stop() {
      // Held requests end at once (preClose); others get a moment.
      const force = setTimeout(() => app.server.closeAllConnections(), CLOSE_GRACE_MS);
      await app.close();
      clearTimeout(force);
      for (const subsystem of started.reverse()) await subsystem.stop?.();
      started = [];
    },
  };
}
