// The control plane contract: what every plane (process, command, docker, kubernetes) must do for the build manager,
// held against a small fake Dockhand (node:http) that records what arrives at the worker's register call, keeps it
// unanswered while the test looks at the worker, then refuses it (401), after which the worker exits. A plane's test
// file calls planeContract() with a way to make the plane and to look at its workers as an onlooker would.
import { randomBytes, randomInt } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  EXECUTION_PREFIX,
  PlaneError,
  type ControlPlane,
  type WorkerLaunch,
} from '../../src/server/builds/planes/controlPlane.js';
import { until } from '../support/wait.js';

export interface PlaneUnderTest {
  plane: ControlPlane;
  /**
   * Everything an onlooker can see of the worker of `executionId` (docker inspect's JSON; the Job, its pods and their
   * containers; /proc cmdline and environ of its processes), or '' once nothing of it is left.
   */
  inspect(executionId: string): Promise<string>;
  cleanup(): Promise<void>;
  /** This host's address as the plane's workers reach it (their gateway); default 127.0.0.1. */
  serverHost?: string;
}

export interface ContractOptions {
  /** Planes that cannot start a worker, and what their PlaneError must say. Planes that cannot fail give none. */
  cannotStart?: { name: string; make(): Promise<PlaneUnderTest>; message: RegExp }[];
  /** How long a started worker may take to call register; default 30 s. */
  registerWithinMs?: number;
}

/** What the kubernetes plane calls, and all it needs of a Role in BUILDER_NAMESPACE. */
export const KUBERNETES_PLANE_RULES = [
  // Each worker's Job: created suspended, resumed (a merge patch), listed to count, deleted to stop it.
  { apiGroups: ['batch'], resources: ['jobs'], verbs: ['create', 'patch', 'list', 'delete'] },
  // Its token's Secret, owned by the Job (the garbage collector deletes it with the Job).
  { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
];

interface Registration {
  method: string;
  path: string;
  host: string;
  body: unknown;
  answer(status: number): void;
}

/** Dockhand's stand-in: every request is recorded; register calls under a refused prefix get 401, others wait. */
class FakeDockhand {
  readonly registrations: Registration[] = [];
  private readonly refused = new Set<string>();
  private readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        body = Buffer.concat(chunks).toString('utf8');
      }
      const answer = (status: number) => {
        if (res.writableEnded || res.destroyed) return;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'this registration token is not valid' }));
      };
      const path = req.url ?? '';
      if (!path.endsWith('/api/build-worker/v1/register')) return answer(404);
      const r = { method: req.method ?? '', path, host: req.headers.host ?? '', body, answer };
      this.registrations.push(r);
      if ([...this.refused].some((prefix) => path.startsWith(`${prefix}/`))) answer(401);
    });
  });

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.server.listen(0, '0.0.0.0', resolve));
    return (this.server.address() as AddressInfo).port;
  }

  under(prefix: string): Registration[] {
    return this.registrations.filter((r) => r.path.startsWith(`${prefix}/`));
  }

  /** Answers 401 to the register calls under `prefix`, now and from now on. */
  refuse(prefix: string): void {
    this.refused.add(prefix);
    for (const r of this.under(prefix)) r.answer(401);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

const b64url = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** A token shaped like the manager's (a JWT), unique to one launch. */
function registrationToken(): string {
  const claims = { sub: `build-${randomInt(1e6)}`, jti: randomBytes(12).toString('hex') };
  return [
    b64url(JSON.stringify({ alg: 'EdDSA', typ: 'JWT' })),
    b64url(JSON.stringify(claims)),
    b64url(randomBytes(64)),
  ].join('.');
}

function expectNoToken(seen: string, token: string): void {
  for (const form of [token, b64url(token), Buffer.from(token).toString('base64'), token.split('.')[2]])
    expect(seen.includes(form), `the token (or its base64) is visible:\n${seen.slice(0, 2000)}`).toBe(false);
}

export function planeContract(name: string, makePlane: () => Promise<PlaneUnderTest>, options: ContractOptions = {}) {
  describe(`control plane contract: ${name}`, () => {
    const fake = new FakeDockhand();
    let port: number;
    let put: PlaneUnderTest;
    const started = new Set<string>();
    const registerWithinMs = options.registerWithinMs ?? 30_000;

    beforeAll(async () => {
      port = await fake.listen();
      put = await makePlane();
    }, 600_000);
    afterAll(async () => {
      for (const id of started) await put?.plane.stop(id).catch(() => undefined);
      await put?.cleanup();
      await fake.close();
    }, 120_000);

    /** A launch of its own: a fresh token, and a server URL under a path of its own (so its calls are told apart). */
    function launch(): { launch: WorkerLaunch; prefix: string } {
      const buildId = randomInt(1, 1e6);
      const prefix = `/dockhand-${randomBytes(4).toString('hex')}`;
      const l: WorkerLaunch = {
        buildId,
        tryNumber: 1,
        executionId: `${EXECUTION_PREFIX}${buildId}-1-${randomBytes(3).toString('hex')}`,
        registrationToken: registrationToken(),
        serverUrl: `http://${put.serverHost ?? '127.0.0.1'}:${port}${prefix}`,
        maxBuildS: 600,
      };
      started.add(l.executionId);
      return { launch: l, prefix };
    }

    const registered = (prefix: string) =>
      until('the worker calls register', () => fake.under(prefix)[0], registerWithinMs, 100);

    const gone = (executionId: string) =>
      until(`nothing is left of ${executionId}`, async () => (await put.inspect(executionId)) === '', 30_000, 200);

    it('start() runs a worker that registers at the server URL with exactly its token, which no onlooker sees; running() counts it while it runs', async () => {
      const before = await put.plane.running();
      const { launch: l, prefix } = launch();
      await put.plane.start(l);
      const call = await registered(prefix);
      expect(call.method).toBe('POST');
      expect(call.path).toBe(`${prefix}/api/build-worker/v1/register`);
      expect(call.host).toBe(`${put.serverHost ?? '127.0.0.1'}:${port}`);
      expect(call.body).toEqual({ registrationToken: l.registrationToken });
      expect(await put.plane.running()).toBe(before + 1);

      const seen = await put.inspect(l.executionId);
      expect(seen).toContain(l.executionId);
      expectNoToken(seen, l.registrationToken);

      // Refused, the worker exits: no longer running, though stop() still has to remove what is left.
      fake.refuse(prefix);
      await until('the refused worker is no longer counted', async () => (await put.plane.running()) === before);
      await put.plane.stop(l.executionId);
      await gone(l.executionId);
      await put.plane.stop(l.executionId);
    });

    it('stop() removes a running worker, and a second stop() is fine', async () => {
      const before = await put.plane.running();
      const { launch: l, prefix } = launch();
      await put.plane.start(l);
      await registered(prefix);
      expect(await put.plane.running()).toBe(before + 1);
      await put.plane.stop(l.executionId);
      await until('the stopped worker is no longer counted', async () => (await put.plane.running()) === before);
      await gone(l.executionId);
      await put.plane.stop(l.executionId);
      expect(await put.plane.running()).toBe(before);
    });

    it('stop() of a worker it never started is fine', async () => {
      await put.plane.stop(`${EXECUTION_PREFIX}999999-1-${randomBytes(3).toString('hex')}`);
    });

    for (const broken of options.cannotStart ?? []) {
      it(`start() throws a PlaneError that says why when it cannot start a worker: ${broken.name}`, async () => {
        const other = await broken.make();
        const { launch: l, prefix } = launch();
        try {
          const err = await other.plane.start(l).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err).toBeInstanceOf(PlaneError);
          expect((err as Error).message).toMatch(broken.message);
          expectNoToken((err as Error).message, l.registrationToken);
          // Nothing is left behind, and nothing runs.
          expect(await other.inspect(l.executionId)).toBe('');
          expect(fake.under(prefix)).toEqual([]);
        } finally {
          await other.plane.stop(l.executionId).catch(() => undefined);
          await other.cleanup();
        }
      });
    }
  });
}
