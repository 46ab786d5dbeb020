// Encryption at rest for secret values and jobs' registry credentials: AES-256-GCM with a random 96-bit nonce per
// value, bound to the row it belongs to (associated data), so a ciphertext copied to another row does not open.
//
// Keys come from DOCKHAND_ENCRYPTION_KEY (one or more 32-byte keys, base64 or hex, comma-separated, the first one
// encrypts), or else from a key file in the data directory, made on the first start with mode 0600. Each
// ciphertext names the key that made it ("dh1:<key id>:<base64 nonce|tag|ciphertext>"), so old keys keep
// opening old values until `dockhand secret rotate-key` has re-encrypted them.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../../core/envConfig.js';

export const KEY_FILE_NAME = 'encryption.key';
const FORMAT = 'dh1';
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** "dh1:" + 8 hex digits of key id + ":" */
export const CIPHERTEXT_PREFIX_LENGTH = FORMAT.length + 1 + 8 + 1;

export const KEY_HELP = 'Each key is 32 random bytes in base64 or hex, e.g. from `openssl rand -base64 32`.';

export class DecryptError extends Error {}

function keyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

function parseKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (
    key.length !== KEY_BYTES ||
    (!/^[0-9a-fA-F]{64}$/.test(trimmed) && key.toString('base64').replace(/=+$/, '') !== trimmed.replace(/=+$/, ''))
  ) {
    // Never repeat the value: it is a key.
    throw new ConfigError(`${source} holds a key that is not 32 bytes of base64 or hex. ${KEY_HELP}`);
  }
  return key;
}

export function generateKey(): string {
  return randomBytes(KEY_BYTES).toString('base64');
}

export interface KeySource {
  /** Where the keys came from, for messages: "DOCKHAND_ENCRYPTION_KEY" or the key file's path. */
  describe: string;
  /** The key file, when the keys live in one (rotation rewrites it). */
  file?: string;
}

export class Keyring {
  private keys: { id: string; key: Buffer }[] = [];
  /** The key file's inode, modification time and size when it was read, to notice a rotation (which replaces it). */
  private fileStamp = '';

  constructor(
    keys: Buffer[],
    readonly source: KeySource,
  ) {
    this.setKeys(keys);
    if (source.file) this.fileStamp = stampOf(source.file);
  }

  private setKeys(keys: Buffer[]): void {
    if (!keys.length) throw new ConfigError(`${this.source.describe} holds no key. ${KEY_HELP}`);
    this.keys = keys.map((key) => ({ id: keyId(key), key }));
  }

  /** Rereads the key file if `dockhand secret rotate-key` changed it since, so this process encrypts with the new key. */
  private refresh(): void {
    if (!this.source.file) return;
    const stamp = stampOf(this.source.file);
    if (stamp === this.fileStamp) return;
    this.setKeys(readKeyFile(this.source.file));
    this.fileStamp = stamp;
  }

  /** Keys from DOCKHAND_ENCRYPTION_KEY, or else the data directory's key file, made now if there is none. */
  static load(env: NodeJS.ProcessEnv, dataDir: string): Keyring {
    const fromEnv = env.DOCKHAND_ENCRYPTION_KEY?.trim();
    if (fromEnv) {
      const keys = fromEnv.split(',').map((part, i) => parseKey(part, `DOCKHAND_ENCRYPTION_KEY (key ${i + 1})`));
      return new Keyring(keys, { describe: 'DOCKHAND_ENCRYPTION_KEY' });
    }
    const file = path.join(dataDir, KEY_FILE_NAME);
    if (!existsSync(file)) {
      mkdirSync(dataDir, { recursive: true });
      writeKeyFile(file, [generateKey()]);
    }
    return new Keyring(readKeyFile(file), { describe: file, file });
  }

  /** The keys, base64, the encrypting one first (for rewriting the key file). */
  exportKeys(): string[] {
    return this.keys.map((k) => k.key.toString('base64'));
  }

  get primaryId(): string {
    return this.keys[0].id;
  }

  get ids(): string[] {
    return this.keys.map((k) => k.id);
  }

  /**
   * Signing keys for `purpose` derived from every key (HKDF-SHA256), the current one first, with its key id: what
   * one replica signs, another with the same keys verifies, also across a rotation.
   */
  signingKeys(purpose: string): { id: string; key: Uint8Array }[] {
    this.refresh();
    return this.keys.map(({ id, key }) => ({
      id,
      key: new Uint8Array(hkdfSync('sha256', key, Buffer.alloc(0), `dockhand ${purpose}`, 32)),
    }));
  }

  encrypt(plaintext: string, context: string): string {
    this.refresh();
    const { id, key } = this.keys[0];
    const nonce = randomBytes(NONCE_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${FORMAT}:${id}:${Buffer.concat([nonce, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  decrypt(ciphertext: string, context: string): string {
    const [format, id, payload] = ciphertext.split(':');
    if (format !== FORMAT || !payload) throw new DecryptError('the stored value is not in a known encrypted format');
    let entry = this.keys.find((k) => k.id === id);
    if (!entry) {
      // A rotation may have changed the file since this process read it.
      this.refresh();
      entry = this.keys.find((k) => k.id === id);
    }
    if (!entry)
      throw new DecryptError(`the value was encrypted with key ${id}, which ${this.source.describe} does not hold`);
    const raw = Buffer.from(payload, 'base64');
    try {
      const decipher = createDecipheriv('aes-256-gcm', entry.key, raw.subarray(0, NONCE_BYTES));
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(raw.subarray(NONCE_BYTES, NONCE_BYTES + TAG_BYTES));
      return Buffer.concat([decipher.update(raw.subarray(NONCE_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new DecryptError(`the value does not decrypt with key ${id} (altered, or moved from another row)`);
    }
  }

  /** The ciphertext under the primary key (unchanged when it already is). */
  reencrypt(ciphertext: string, context: string): string {
    if (ciphertext.startsWith(`${FORMAT}:${this.primaryId}:`)) return ciphertext;
    return this.encrypt(this.decrypt(ciphertext, context), context);
  }

  /** Key ids named by `prefixes` (the leading characters of stored ciphertexts) that this keyring lacks. */
  missingKeys(prefixes: string[]): string[] {
    const ids = prefixes.filter((p) => p.startsWith(`${FORMAT}:`)).map((p) => p.split(':')[1]);
    return [...new Set(ids)].filter((id) => !this.keys.some((k) => k.id === id));
  }
}

function stampOf(file: string): string {
  const stat = statSync(file);
  return `${stat.ino}:${stat.mtimeMs}:${stat.size}`;
}

/** A key file holds one key per line, the first one encrypting; it must be readable by its owner only. */
export function readKeyFile(file: string): Buffer[] {
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new ConfigError(`${file} can be read by other users (mode ${mode.toString(8)}); run: chmod 600 ${file}`);
  }
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));
  return lines.map((line, i) => parseKey(line, `${file} (line ${i + 1})`));
}

/**
 * Writes the key file whole or not at all (a crash leaves the old one), and on the disk before returning: without
 * the syncs, a machine that fails soon after can come back with an empty key file and every secret lost with it.
 */
export function writeKeyFile(file: string, keys: string[]): void {
  const temp = `${file}.${process.pid}.tmp`;
  const fd = openSync(temp, 'w', 0o600);
  try {
    writeFileSync(
      fd,
      `# Dockhand encryption keys: the first one encrypts. Keep this file; without it secrets are lost.\n${keys.join('\n')}\n`,
    );
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(temp, 0o600);
  renameSync(temp, file);
  const dir = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}
