// A self-signed certificate for 127.0.0.1, made in-process (a minimal DER writer and node:crypto): client-go
// (kubectl) only sends a bearer token over TLS, so the double must speak it.
import { createPrivateKey, generateKeyPairSync, randomBytes, sign, X509Certificate } from 'node:crypto';

export interface ServerCertificate {
  /** PEM, usable as the server's cert and as the client's CA (it is its own issuer). */
  cert: string;
  key: string;
}

function der(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  const n = body.length;
  const length =
    n < 0x80 ? Buffer.from([n]) : n < 0x100 ? Buffer.from([0x81, n]) : Buffer.from([0x82, n >> 8, n & 0xff]);
  return Buffer.concat([Buffer.from([tag]), length, body]);
}

const seq = (...c: Buffer[]) => der(0x30, ...c);

function oid(text: string): Buffer {
  const arcs = text.split('.').map(Number);
  const bytes = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const chunk = [arc & 0x7f];
    for (let v = arc >> 7; v > 0; v >>= 7) chunk.unshift((v & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return der(0x06, Buffer.from(bytes));
}

function utcTime(date: Date): Buffer {
  const p = (n: number) => String(n).padStart(2, '0');
  const text = `${p(date.getUTCFullYear() % 100)}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}Z`;
  return der(0x17, Buffer.from(text, 'ascii'));
}

const name = (cn: string) => seq(der(0x31, seq(oid('2.5.4.3'), der(0x0c, Buffer.from(cn, 'utf8')))));
const extension = (id: string, critical: boolean, value: Buffer) =>
  seq(oid(id), ...(critical ? [der(0x01, Buffer.from([0xff]))] : []), der(0x04, value));

export function selfSignedCertificate(commonName = 'kube-double'): ServerCertificate {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ecdsaWithSha256 = seq(oid('1.2.840.10045.4.3.2'));
  const serial = randomBytes(16);
  serial[0] &= 0x7f;
  const now = Date.now();
  const tbs = seq(
    der(0xa0, der(0x02, Buffer.from([2]))), // v3
    der(0x02, serial),
    ecdsaWithSha256,
    name(commonName),
    seq(utcTime(new Date(now - 3600_000)), utcTime(new Date(now + 365 * 86400_000))),
    name(commonName),
    publicKey.export({ type: 'spki', format: 'der' }),
    der(
      0xa3,
      seq(
        extension('2.5.29.19', true, seq(der(0x01, Buffer.from([0xff])))), // basicConstraints: CA
        extension('2.5.29.15', true, der(0x03, Buffer.from([0x02, 0x84]))), // keyUsage: digitalSignature, keyCertSign
        extension('2.5.29.37', false, seq(oid('1.3.6.1.5.5.7.3.1'))), // extKeyUsage: serverAuth
        extension('2.5.29.17', false, seq(der(0x87, Buffer.from([127, 0, 0, 1])), der(0x82, Buffer.from('localhost')))),
      ),
    ),
  );
  const signature = sign('sha256', tbs, privateKey);
  const certDer = seq(tbs, ecdsaWithSha256, der(0x03, Buffer.from([0]), signature));
  const cert = `-----BEGIN CERTIFICATE-----\n${certDer
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .trimEnd()}\n-----END CERTIFICATE-----\n`;
  // Parse it back: a malformed certificate fails here rather than in a client's handshake.
  if (
    !new X509Certificate(cert).checkPrivateKey(createPrivateKey(privateKey.export({ type: 'pkcs8', format: 'pem' })))
  ) {
    throw new Error('kube double: the generated certificate does not match its key');
  }
  return { cert, key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string };
}
