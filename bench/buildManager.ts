// Image builds through the build manager, per control plane, against a bare `buildah bud` + `buildah push` of the
// same context on this host in the same run (the physical floor: the same builder, the same registry, no manager).
//
//   registered   submit's request → the worker's registration (the try's registeredAt): the plane's start-up.
//   pushed       submit's request → the build's `complete` phase, as a client polling GET /builds/:id every
//                BENCH_POLL_MS (default 20) sees it.
//   bare         `buildah bud` into empty storage (pulling the base) + `buildah push`, as the worker does it, timed
//                on the host.
//
// Every build's Dockerfile differs in one ARG (so no layer cache is hit; LAYER_CACHE is off but for the
// process-layer-cache row, which shows what pushing layers to the build cache costs), pulls a
// busybox base from a local registry with htpasswd auth, runs one RUN and copies one file. Planes: process, docker
// (runc), docker (runsc-net: gVisor, Debian 13's runsc, passing network calls to the container's namespace) and
// kubernetes on the API test double (pods run in Docker). Builds are run one at a time.
//
// Environment: BENCH_BUILDS (default 5 per plane), BENCH_WARMUP (1), BENCH_PLANES (all), BENCH_WRITE=0.
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { DOCKER_TEST_IMAGE, ensureBuildWorkerImage, ensureTestImages } from '../test/support/docker.js';
import { startKubeDouble, type KubeDouble } from '../test/support/kubernetes/index.js';
import { freePort } from '../test/support/ports.js';
import { startRegistry, type RegistryHandle } from '../test/support/registry.js';
import { describeMachine } from './machine.js';
import { ADMIN_TOKEN, EXECUTORS_TOKEN, Proc, fmtMs, fmtRatio, sleep, summarize, tempDir, writeSection } from './lib.js';

const run = promisify(execFile);
const BUILDS = Number(process.env.BENCH_BUILDS ?? 5);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1);
const POLL_MS = Number(process.env.BENCH_POLL_MS ?? 20);
const USER = 'bench';
const PASSWORD = 'bench-registry-password';
const ALL_PLANES = ['process', 'process-layer-cache', 'docker-runc', 'docker-runsc', 'kubernetes'] as const;
type PlaneName = (typeof ALL_PLANES)[number];
const PLANES = (process.env.BENCH_PLANES?.split(',') ?? ALL_PLANES) as PlaneName[];

interface Sample {
  registeredMs: number;
  pushedMs?: number;
  /** Time in each phase (ms), from the build's phase history. */
  phases?: Record<string, number>;
}

/** Where the time goes: each phase's share, from its start to the next phase's. */
const SPANS = ['waiting', 'build-scheduled', 'unpacking', 'pulling', 'building', 'pushing'] as const;

function dockerfile(base: string, n: string): string {
  return `FROM ${base}\nARG N\nRUN echo "build $N" > /n\nCOPY hello.txt /hello.txt\n`;
}

async function contextDir(base: string, n: string): Promise<string> {
  const dir = await tempDir('bench-build-context');
  writeFileSync(path.join(dir, 'Dockerfile'), dockerfile(base, n));
  writeFileSync(path.join(dir, 'hello.txt'), `hello ${n}\n`);
  return dir;
}

async function gateway(network: string): Promise<string> {
  const { stdout } = await run('docker', [
    'network',
    'inspect',
    network,
    '--format',
    '{{(index .IPAM.Config 0).Gateway}}',
  ]);
  return stdout.trim();
}

/** The bare floor: buildah on this host into empty storage, then push, as the worker runs them. */
async function bare(registryHost: string, n: string, authFile: string): Promise<number> {
  const work = await tempDir('bench-bare');
  const ctx = await contextDir(`${registryHost}/base/busybox:1`, n);
  const conf = path.join(work, 'registries.conf');
  writeFileSync(conf, `[[registry]]\nlocation = "${registryHost}"\ninsecure = true\n`);
  const env = {
    ...process.env,
    CONTAINERS_REGISTRIES_CONF: conf,
    REGISTRY_AUTH_FILE: authFile,
    BUILDAH_ISOLATION: 'chroot',
  };
  const global = ['--root', path.join(work, 'storage'), '--runroot', path.join(work, 'run'), '--storage-driver', 'vfs'];
  const tag = `${registryHost}/bench/bare:${n}`;
  const started = performance.now();
  await run('buildah', [...global, 'bud', '--isolation', 'chroot', '--build-arg', `N=${n}`, '-t', tag, ctx], { env });
  await run('buildah', [...global, 'push', tag, `docker://${tag}`], { env });
  const ms = performance.now() - started;
  await run('rm', ['-rf', work, ctx]);
  return ms;
}

async function call<T>(
  url: string,
  method: string,
  route: string,
  body?: unknown,
  type = 'application/json',
): Promise<T> {
  const res = await fetch(`${url}/api/v1${route}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body !== undefined ? { 'content-type': type } : {}) },
    body: (body === undefined ? undefined : type === 'application/json' ? JSON.stringify(body) : body) as
      BodyInit | undefined,
  });
  const answer = (await res.json()) as T & { error?: string };
  if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${answer.error ?? ''}`);
  return answer;
}

interface PlaneSetup {
  plane: Record<string, unknown>;
  /** The host's registry as the worker sees it. */
  registryHost: string;
  /** Builds fail on this plane (gVisor): only registration is timed. */
  registrationOnly?: boolean;
  /** LAYER_CACHE on: the worker also pushes its layers to the build cache (off elsewhere, as the bare build has none). */
  layerCache?: boolean;
}

async function once(url: string, setup: PlaneSetup, n: string): Promise<Sample> {
  const ctx = await contextDir(`${setup.registryHost}/base/busybox:1`, n);
  const { stdout: tar } = await run('tar', ['-czf', '-', '-C', ctx, '.'], { encoding: 'buffer', maxBuffer: 1 << 26 });
  await run('rm', ['-rf', ctx]);
  const started = performance.now();
  const t0 = Date.now();
  const uploaded = await call<{ id: string }>(url, 'POST', '/builds/contexts', new Uint8Array(tar), 'application/gzip');
  const { build } = await call<{ build: { id: number } }>(url, 'POST', '/builds', {
    context: { upload: uploaded.id },
    tags: [`${setup.registryHost}/bench/app:${n}`],
    buildArgs: { N: n },
  });
  let pushedMs: number | undefined;
  for (;;) {
    const detail = await call<{
      build: { phase: string; final: boolean; message: string | null; phases: { phase: string; at: number }[] };
      tries: { registeredAt: number | null }[];
    }>(url, 'GET', `/builds/${build.id}`);
    const registeredAt = detail.tries[0]?.registeredAt;
    if (setup.registrationOnly && registeredAt) {
      await call(url, 'POST', `/builds/${build.id}/cancel`).catch(() => undefined);
      return { registeredMs: registeredAt - t0 };
    }
    if (detail.build.phase === 'complete') {
      pushedMs = performance.now() - started;
      const phases: Record<string, number> = {};
      const list = detail.build.phases;
      for (let i = 0; i + 1 < list.length; i++) phases[list[i].phase] = list[i + 1].at - list[i].at;
      return { registeredMs: (registeredAt ?? Date.now()) - t0, pushedMs, phases };
    }
    if (detail.build.final) throw new Error(`build ${build.id} ended ${detail.build.phase}: ${detail.build.message}`);
    await sleep(POLL_MS);
  }
}

/** A server on 0.0.0.0:port (containers reach it through their gateway) whose config file holds `builds`. */
async function startBuildServer(
  dir: string,
  port: number,
  builds: Record<string, unknown>,
): Promise<{ url: string; proc: Proc }> {
  const file = path.join(dir, 'dockhand.yaml');
  writeFileSync(file, YAML.stringify({ builds }));
  const args = ['server', '--host', '0.0.0.0', '--port', String(port), '--data-dir', dir, '--config', file];
  const proc = new Proc('server', args, {
    DOCKHAND_EXECUTORS_ACCESS_TOKEN: EXECUTORS_TOKEN,
    DOCKHAND_ADMIN_TOKEN: ADMIN_TOKEN,
  });
  const match = await proc.waitFor(/listening on (http:\/\/127\.0\.0\.1:(\d+))/);
  return { url: match[1], proc };
}

async function main(): Promise<void> {
  await ensureTestImages();
  const image = await ensureBuildWorkerImage();
  const [workerImage, workerTag] = image.split(':');
  const registry: RegistryHandle = await startRegistry({ user: USER, password: PASSWORD, listen: '0.0.0.0' });
  let cluster: KubeDouble | undefined;
  const samples = new Map<PlaneName, Sample[]>();
  const bareMs = new Map<PlaneName, number[]>();
  const bareOf = (name: PlaneName): number[] => bareMs.get(name) ?? (bareMs.set(name, []), bareMs.get(name)!);
  try {
    await registry.push(DOCKER_TEST_IMAGE, 'base/busybox:1');
    const dockerGateway = await gateway('bridge');
    const local = registry.host;
    const auth = (host: string) => ({ [host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } });
    const authDir = await tempDir('bench-auth');
    mkdirSync(authDir, { recursive: true });
    const authFile = path.join(authDir, 'auth.json');
    writeFileSync(authFile, JSON.stringify({ auths: auth(local) }));
    if (PLANES.includes('kubernetes')) cluster = await startKubeDouble({ namespaces: ['builder'] });
    const kubeHost = cluster ? `${cluster.hostAddress}:${registry.port}` : '';
    const common = { WORKER_IMAGE: workerImage, WORKER_TAG: workerTag, SETUP_TIME: 120 };
    const setups: Record<PlaneName, () => Promise<PlaneSetup>> = {
      process: async () => ({ plane: { EXECUTOR: 'process', NAME: 'process', SETUP_TIME: 60 }, registryHost: local }),
      'process-layer-cache': async () => ({
        plane: { EXECUTOR: 'process', NAME: 'process', SETUP_TIME: 60 },
        registryHost: local,
        layerCache: true,
      }),
      'docker-runc': async () => ({
        plane: { EXECUTOR: 'docker', NAME: 'runc', DOCKER_RUNTIME: 'runc', ...common },
        registryHost: `${dockerGateway}:${registry.port}`,
      }),
      'docker-runsc': async () => ({
        plane: { EXECUTOR: 'docker', NAME: 'runsc', DOCKER_RUNTIME: 'runsc-net', ...common },
        registryHost: `${dockerGateway}:${registry.port}`,
      }),
      kubernetes: async () => ({
        plane: {
          EXECUTOR: 'kubernetes',
          NAME: 'kubernetes',
          KUBECONFIG: await cluster!.writeKubeconfig(await tempDir('bench-kubeconfig'), 'admin', 'builder'),
          BUILDER_NAMESPACE: 'builder',
          ...common,
        },
        registryHost: kubeHost,
      }),
    };
    for (const name of PLANES) {
      const setup = await setups[name]();
      const dir = await tempDir(`bench-builds-${name}`);
      const port = await freePort();
      const server = await startBuildServer(dir, port, {
        RETRY_AFTER: 0,
        MAX_TRIES: 1,
        LAYER_CACHE: setup.layerCache ?? false,
        INSECURE_REGISTRIES: [`${dockerGateway}:${registry.port}`, ...(kubeHost ? [kubeHost] : [])],
        // Pods reach this server through the double's network gateway.
        EXECUTORS: [
          name === 'kubernetes'
            ? { ...setup.plane, SERVER_URL: `http://${cluster!.hostAddress}:${port}` }
            : setup.plane,
        ],
      });
      try {
        // The build's own namespace's: a global login never pushes.
        await call(server.url, 'POST', '/secrets', {
          namespace: 'user:admin',
          name: 'DOCKER_AUTH_CONFIG',
          value: JSON.stringify({
            auths: {
              ...auth(local),
              ...auth(`${dockerGateway}:${registry.port}`),
              ...(kubeHost ? auth(kubeHost) : {}),
            },
          }),
        });
        const list: Sample[] = [];
        for (let i = 0; i < WARMUP + BUILDS; i++) {
          const sample = await once(server.url, setup, `${name}-${i}-${Date.now()}`);
          if (i >= WARMUP) list.push(sample);
          // The bare floor, one after each build, so both see the same machine at the same time.
          if (i >= WARMUP) bareOf(name).push(await bare(local, `bare-${i}-${Date.now()}`, authFile));
        }
        samples.set(name, list);
      } finally {
        await server.proc.stop();
      }
    }
  } finally {
    await cluster?.close();
    await registry.stop();
  }
  await report(samples, bareMs);
}

async function report(samples: Map<PlaneName, Sample[]>, bareMs: Map<PlaneName, number[]>): Promise<void> {
  const rows = [...samples].map(([name, list]) => {
    const reg = summarize(list.map((s) => s.registeredMs));
    const floor = summarize(bareMs.get(name) ?? []);
    const pushed = list.every((s) => s.pushedMs !== undefined) ? summarize(list.map((s) => s.pushedMs!)) : undefined;
    return `| ${name} | ${list.length} | ${fmtMs(reg.median)} | ${pushed ? fmtMs(pushed.median) : 'fails (see below)'} | ${pushed ? fmtMs(pushed.p90) : '–'} | ${fmtMs(floor.median)} | ${pushed ? fmtRatio(pushed.median / floor.median) : '–'} |`;
  });
  const spanRows = [...samples]
    .filter(([, list]) => list.every((s) => s.phases))
    .map(
      ([name, list]) =>
        `| ${name} | ${SPANS.map((p) => fmtMs(summarize(list.map((s) => s.phases![p] ?? 0)).median)).join(' | ')} |`,
    );
  const body = [
    '## Image builds: submit → registered, submit → pushed, per control plane',
    '',
    `Medians of ${BUILDS} builds per plane (after ${WARMUP} warm-up), one at a time, each followed by a bare \`buildah bud\` + \`buildah push\` of the same kind of context on the host (fresh storage each time, as a worker has): the floor, measured next to each plane's builds.`,
    '',
    '| plane | builds | submit → registered | submit → pushed | p90 | bare (same block) | pushed / bare |',
    '|---|---|---|---|---|---|---|',
    ...rows,
    '',
    "Where the time goes (median ms in each phase; build-scheduled includes starting the worker and its registration; the worker pushes its layers to the repository's build cache as it builds, which the bare build does not):",
    '',
    `| plane | ${SPANS.join(' | ')} |`,
    `|---|${SPANS.map(() => '---').join('|')}|`,
    ...spanRows,
    '',
    "docker-runsc: gVisor (Debian 13's runsc, registered as runsc-net); every system call of the build, its RUN steps included, goes to gVisor's kernel.",
    `Machine: ${describeMachine()}; Node ${process.version}. Run: \`npm run bench:builds\`.`,
  ].join('\n');
  process.stdout.write(`${body}\n`);
  if (process.env.BENCH_WRITE !== '0') await writeSection('builds', body);
}

await main();
