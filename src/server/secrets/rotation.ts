// Key rotation: every stored secret and job credential re-encrypted with a new key, in one transaction. With a key
// file the new key is made here and the old one leaves the file once nothing uses it; with DOCKHAND_ENCRYPTION_KEY
// the operator puts the new key first, and removes the old ones after this has run.
import path from 'node:path';
import type { Accounts } from '../../store/accounts.js';
import { CIPHERTEXT_PREFIX_LENGTH, Keyring, generateKey, writeKeyFile } from './keyring.js';

export interface RotationReport {
  keyId: string;
  secrets: number;
  jobs: number;
  /** Key ids no stored value uses any more (removed from the key file, or to remove from the env). */
  retired: string[];
  /** The key file rewritten, if the keys live in one. */
  file?: string;
}

/** Passes over the data until nothing uses another key (a server may have written with the old key meanwhile). */
const MAX_PASSES = 5;

export async function rotateKey(accounts: Accounts, current: Keyring): Promise<RotationReport> {
  const file = current.source.file;
  let keyring = current;
  if (file) {
    // The new key goes first while the old ones stay, so every value opens at every moment, even after a crash.
    writeKeyFile(file, [generateKey(), ...current.exportKeys()]);
    keyring = Keyring.load({}, path.dirname(file));
  }
  const totals = { secrets: 0, jobs: 0 };
  for (let pass = 0; ; pass++) {
    const counts = await accounts.rewriteCiphertexts((stored, context) =>
      // Credentials stored before encryption existed are plain JSON.
      stored.startsWith('{') ? keyring.encrypt(stored, context) : keyring.reencrypt(stored, context),
    );
    totals.secrets += counts.secrets;
    totals.jobs += counts.jobs;
    const others = (await accounts.ciphertextPrefixes(CIPHERTEXT_PREFIX_LENGTH)).filter(
      (p) => !p.includes(`:${keyring.primaryId}:`),
    );
    if (!others.length) break;
    if (pass === MAX_PASSES)
      throw new Error(
        `values keep appearing under old keys (${others.join(', ')}); stop the servers and run this again`,
      );
  }
  const retired = keyring.ids.slice(1);
  if (file) writeKeyFile(file, keyring.exportKeys().slice(0, 1));
  return { keyId: keyring.primaryId, ...totals, retired, file };
}
