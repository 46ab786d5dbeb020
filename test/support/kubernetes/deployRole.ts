// The rules of the Role that deploy/kubernetes installs for the executor: the tests hold the runtime to exactly these
// in the API double, so a call the Role does not grant fails there as it would on a cluster.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { ROOT } from '../processes.js';

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

/** The base Role's rules. */
export async function executorRole(): Promise<PolicyRule[]> {
  const role = parse(await readFile(path.join(ROOT, 'deploy/kubernetes/base/role.yaml'), 'utf8')) as {
    rules: PolicyRule[];
  };
  return role.rules;
}
