// Whether an executor's release works with the server's: shown on the executors list (API, CLI, web UI).

/** How an executor's version compares with the server's; see `executorCompatibility`. */
export type ExecutorCompatibility = 'up_to_date' | 'outdated' | 'version_ahead';

interface Version {
  major: number;
  minor: number;
}

// MAJOR.MINOR[.PATCH][-pre-release][+build], with an optional leading "v". The patch level may be left out
// ("3.40"); a bare major ("1") or anything else does not parse.
const VERSION_RE = /^v?(0|[1-9]\d*)\.(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;

/** The major and minor of a release, or undefined for what does not parse or is a dev build (0.0.0-anything). */
function parseVersion(raw: string): Version | undefined {
  const m = VERSION_RE.exec(raw.trim());
  if (!m) return undefined;
  const [major, minor, patch] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)];
  if (!Number.isSafeInteger(major) || !Number.isSafeInteger(minor)) return undefined;
  // 0.0.0 is what unreleased builds report ('0.0.0-dev' when package.json cannot be read): nothing to compare.
  if (major === 0 && minor === 0 && patch === 0) return undefined;
  return { major, minor };
}

/**
 * `up_to_date` when both have the same major version and their minor versions differ by at most one (patch levels
 * and pre-releases are ignored); otherwise `outdated` when the executor is the older one and `version_ahead` when
 * it is the newer. null when either version does not parse (dev builds such as '0.0.0-dev', or 'test').
 */
export function executorCompatibility(executorVersion: string, serverVersion: string): ExecutorCompatibility | null {
  const executor = parseVersion(executorVersion);
  const server = parseVersion(serverVersion);
  if (!executor || !server) return null;
  if (executor.major === server.major && Math.abs(executor.minor - server.minor) <= 1) return 'up_to_date';
  const older = executor.major !== server.major ? executor.major < server.major : executor.minor < server.minor;
  return older ? 'outdated' : 'version_ahead';
}
