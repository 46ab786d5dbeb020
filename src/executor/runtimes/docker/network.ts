// The network step containers use by default: Dockhand's own bridge, with no traffic between containers and no
// way to the cloud metadata service. Docker has no setting for the latter, so the executor installs iptables
// rules on the engine's host (and checks them at start and at every janitor round):
//
//   iptables -N DOCKHAND-ISOLATION
//   iptables -A DOCKHAND-ISOLATION -d 169.254.0.0/16 -j REJECT     (link-local: 169.254.169.254 and friends)
//   iptables -I DOCKER-USER -i dockhand0 -j DOCKHAND-ISOLATION     (traffic the host would forward)
//   iptables -I INPUT -i dockhand0 -j DOCKHAND-ISOLATION           (a metadata proxy on the host itself)
import { execFile } from 'node:child_process';
import type Docker from 'dockerode';
import { BRIDGE_NAME, NETWORK_NAME } from './containerSpec.js';

export const METADATA_ADDRESS = '169.254.169.254';
const CHAIN = 'DOCKHAND-ISOLATION';
const BLOCKED = '169.254.0.0/16';

/** Rules as iptables arguments after the -A/-C/-I verb. */
const CHAIN_RULE = [CHAIN, '-d', BLOCKED, '-j', 'REJECT'];
const JUMPS = [
  ['DOCKER-USER', '-i', BRIDGE_NAME, '-j', CHAIN],
  ['INPUT', '-i', BRIDGE_NAME, '-j', CHAIN],
];

export class NetworkSetupError extends Error {
  constructor(
    message: string,
    readonly fix: string,
  ) {
    super(message);
  }
}

function iptables(args: string[]): Promise<{ ok: boolean; stderr: string }> {
  return new Promise((resolve) => {
    execFile('iptables', ['-w', '5', ...args], { timeout: 15_000 }, (err, _stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT')
        resolve({ ok: false, stderr: 'iptables is not installed' });
      else resolve({ ok: !err, stderr: stderr.trim() });
    });
  });
}

/** Creates the network if it is missing (another executor on the engine may create it at the same moment). */
export async function ensureNetwork(docker: Docker): Promise<void> {
  const existing = await docker.listNetworks({ filters: JSON.stringify({ name: [NETWORK_NAME] }) });
  if (existing.some((n) => n.Name === NETWORK_NAME)) return;
  try {
    await docker.createNetwork({
      Name: NETWORK_NAME,
      Driver: 'bridge',
      CheckDuplicate: true,
      Labels: { 'dev.dockhand.network': 'steps' },
      Options: {
        'com.docker.network.bridge.name': BRIDGE_NAME,
        // Jobs cannot reach each other's containers.
        'com.docker.network.bridge.enable_icc': 'false',
      },
    });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 409) throw err;
  }
}

/** Whether every metadata-blocking rule is in place. */
export async function metadataBlocked(): Promise<{ ok: boolean; detail: string }> {
  for (const rule of [CHAIN_RULE, ...JUMPS]) {
    const r = await iptables(['-C', ...rule]);
    if (!r.ok)
      return { ok: false, detail: `missing: iptables -A ${rule.join(' ')}${r.stderr ? ` (${r.stderr})` : ''}` };
  }
  return { ok: true, detail: `${BLOCKED} (including ${METADATA_ADDRESS}) is rejected from ${BRIDGE_NAME}` };
}

/** Installs whichever rules are missing, then checks them all; throws with the fix when it cannot. */
export async function blockMetadata(): Promise<void> {
  if (!(await iptables(['-C', ...CHAIN_RULE])).ok) {
    await iptables(['-N', CHAIN]); // fails harmlessly when the chain exists
    const added = await iptables(['-A', ...CHAIN_RULE]);
    if (!added.ok) throw setupError(added.stderr);
  }
  for (const jump of JUMPS) {
    if ((await iptables(['-C', ...jump])).ok) continue;
    const added = await iptables(['-I', ...jump]);
    if (!added.ok) throw setupError(added.stderr);
  }
  const check = await metadataBlocked();
  if (!check.ok) throw setupError(check.detail);
}

function setupError(why: string): NetworkSetupError {
  return new NetworkSetupError(
    `cannot block the cloud metadata address ${METADATA_ADDRESS} for step containers: ${why}`,
    'run the executor as root on the Docker host with iptables installed (apt-get install iptables), ' +
      'or set EXECUTOR_DOCKER_NETWORK=none to run steps without any network',
  );
}
