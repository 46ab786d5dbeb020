// Encryption at rest: AES-256-GCM values bound to their row, keys from the env or a private key file, old keys
// still opening old values, and a key file changed by a rotation noticed by a running server.
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/core/envConfig.js';
import { DecryptError, KEY_FILE_NAME, Keyring, generateKey, writeKeyFile } from '../../src/server/secrets/keyring.js';

const tmp = (): string => mkdtempSync(path.join(os.tmpdir(), 'dockhand-keyring-'));
const envKeyring = (...keys: string[]): Keyring => Keyring.load({ DOCKHAND_ENCRYPTION_KEY: keys.join(',') }, tmp());

describe('Keyring', () => {
  it('encrypts each value differently and decrypts it in its own context only', () => {
    const keyring = envKeyring(generateKey());
    const a = keyring.encrypt('s3cret-value', 'secret:global/A');
    const b = keyring.encrypt('s3cret-value', 'secret:global/A');
    expect(a).not.toBe(b);
    expect(a).toMatch(new RegExp(`^dh1:${keyring.primaryId}:`));
    expect(a).not.toContain('s3cret');
    expect(keyring.decrypt(a, 'secret:global/A')).toBe('s3cret-value');
    // Copied to another row, or altered: it does not open.
    expect(() => keyring.decrypt(a, 'secret:global/B')).toThrow(DecryptError);
    const tampered = a.slice(0, -4) + (a.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    expect(() => keyring.decrypt(tampered, 'secret:global/A')).toThrow(DecryptError);
    expect(() => keyring.decrypt('plain text', 'secret:global/A')).toThrow(/not in a known encrypted format/);
  });

  it('takes hex or base64 keys from the env, the first one encrypting, the others still decrypting', () => {
    const oldKey = generateKey();
    const old = envKeyring(oldKey);
    const sealed = old.encrypt('value-under-old-key', 'ctx');
    const hexKey = Buffer.from(generateKey(), 'base64').toString('hex');
    const both = envKeyring(hexKey, oldKey);
    expect(both.ids).toEqual([expect.any(String), old.primaryId]);
    expect(both.decrypt(sealed, 'ctx')).toBe('value-under-old-key');
    expect(both.encrypt('x-value-x', 'ctx')).toMatch(new RegExp(`^dh1:${both.primaryId}:`));
    expect(() => envKeyring(hexKey).decrypt(sealed, 'ctx')).toThrow(
      new RegExp(`key ${old.primaryId}, which DOCKHAND_ENCRYPTION_KEY does not hold`),
    );
    expect(both.reencrypt(sealed, 'ctx')).toMatch(new RegExp(`^dh1:${both.primaryId}:`));
    expect(both.missingKeys([`dh1:${old.primaryId}:`, 'dh1:ffffffff:'])).toEqual(['ffffffff']);
  });

  it('refuses a key that is not 32 bytes, without repeating it', () => {
    for (const bad of ['too-short-key', 'x'.repeat(44), Buffer.alloc(16).toString('base64')]) {
      let error: unknown;
      try {
        envKeyring(bad);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(/not 32 bytes of base64 or hex.*openssl rand -base64 32/);
      expect((error as Error).message).not.toContain(bad);
    }
  });

  it('makes a key file readable by its owner only on the first start, and reads it back after', () => {
    const dir = tmp();
    const first = Keyring.load({}, dir);
    const file = path.join(dir, KEY_FILE_NAME);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(first.source).toEqual({ describe: file, file });
    const again = Keyring.load({}, dir);
    expect(again.primaryId).toBe(first.primaryId);
    expect(again.decrypt(first.encrypt('kept-across-restarts', 'ctx'), 'ctx')).toBe('kept-across-restarts');
    expect(readFileSync(file, 'utf8')).toMatch(/^# Dockhand encryption keys/);
  });

  it('refuses a key file that other users can read, saying how to fix it', () => {
    const dir = tmp();
    Keyring.load({}, dir);
    const file = path.join(dir, KEY_FILE_NAME);
    chmodSync(file, 0o644);
    expect(() => Keyring.load({}, dir)).toThrow(`run: chmod 600 ${file}`);
  });

  it('notices a key file rewritten by a rotation: encrypts with the new key and opens values under it', () => {
    const dir = tmp();
    const running = Keyring.load({}, dir);
    const file = path.join(dir, KEY_FILE_NAME);
    const newKey = generateKey();
    writeKeyFile(file, [newKey]);
    const other = Keyring.load({}, dir);
    expect(other.primaryId).not.toBe(running.primaryId);
    expect(running.decrypt(other.encrypt('after-rotation', 'ctx'), 'ctx')).toBe('after-rotation');
    expect(running.encrypt('new-value-here', 'ctx')).toMatch(new RegExp(`^dh1:${other.primaryId}:`));
    writeFileSync(file, 'garbage\n', { mode: 0o600 });
    expect(() => running.encrypt('x-value-x', 'ctx')).toThrow(ConfigError);
  });
});
