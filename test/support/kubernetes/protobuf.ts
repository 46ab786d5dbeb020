// Request bodies in Kubernetes' protobuf encoding, which kubectl's typed clients send (e.g. `kubectl auth can-i`
// posts a SelfSubjectAccessReview so): the "k8s\0" + runtime.Unknown envelope and the few kinds clients post
// this way, turned into their JSON form.
import type { KubeObject } from './util.js';

const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

type Field = { number: number; wire: number; value: bigint | Buffer };

function readVarint(buf: Buffer, at: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (;;) {
    if (at >= buf.length) throw new Error('truncated varint');
    const byte = buf[at++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [result, at];
    shift += 7n;
  }
}

function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  while (at < buf.length) {
    const [key, next] = readVarint(buf, at);
    at = next;
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (wire === 0) {
      const [v, n] = readVarint(buf, at);
      out.push({ number, wire, value: v });
      at = n;
    } else if (wire === 2) {
      const [len, n] = readVarint(buf, at);
      const end = n + Number(len);
      out.push({ number, wire, value: buf.subarray(n, end) });
      at = end;
    } else if (wire === 1) {
      out.push({ number, wire, value: buf.subarray(at, at + 8) });
      at += 8;
    } else if (wire === 5) {
      out.push({ number, wire, value: buf.subarray(at, at + 4) });
      at += 4;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  return out;
}

/** A message schema: field number → [JSON name, type]. */
type Schema = Record<number, [string, 'string' | 'bool' | 'int' | 'strings' | Schema]>;

function decode(buf: Buffer, schema: Schema): KubeObject {
  const out: KubeObject = {};
  for (const f of fields(buf)) {
    const entry = schema[f.number];
    if (!entry) continue;
    const [name, type] = entry;
    if (type === 'string') out[name] = (f.value as Buffer).toString('utf8');
    else if (type === 'strings') (out[name] ??= []).push((f.value as Buffer).toString('utf8'));
    else if (type === 'bool') out[name] = f.value !== 0n;
    else if (type === 'int') out[name] = Number(BigInt.asIntN(64, f.value as bigint));
    else out[name] = decode(f.value as Buffer, type);
  }
  return out;
}

const RESOURCE_ATTRIBUTES: Schema = {
  1: ['namespace', 'string'],
  2: ['verb', 'string'],
  3: ['group', 'string'],
  4: ['version', 'string'],
  5: ['resource', 'string'],
  6: ['subresource', 'string'],
  7: ['name', 'string'],
};
const NON_RESOURCE_ATTRIBUTES: Schema = { 1: ['path', 'string'], 2: ['verb', 'string'] };

const KINDS: Record<string, Schema> = {
  SelfSubjectAccessReview: {
    2: [
      'spec',
      { 1: ['resourceAttributes', RESOURCE_ATTRIBUTES], 2: ['nonResourceAttributes', NON_RESOURCE_ATTRIBUTES] },
    ],
  },
  SelfSubjectRulesReview: { 2: ['spec', { 1: ['namespace', 'string'] }] },
  DeleteOptions: {
    1: ['gracePeriodSeconds', 'int'],
    2: ['preconditions', { 1: ['uid', 'string'], 2: ['resourceVersion', 'string'] }],
    3: ['orphanDependents', 'bool'],
    4: ['propagationPolicy', 'string'],
    5: ['dryRun', 'strings'],
  },
};

/** The JSON form of a protobuf body, or undefined for a kind the double cannot read this way. */
export function decodeProtobuf(body: Buffer): KubeObject | undefined {
  if (!body.subarray(0, 4).equals(MAGIC)) return undefined;
  const unknown = decode(body.subarray(4), {
    1: ['typeMeta', { 1: ['apiVersion', 'string'], 2: ['kind', 'string'] }],
  });
  const raw = fields(body.subarray(4)).find((f) => f.number === 2)?.value as Buffer | undefined;
  const kind = unknown.typeMeta?.kind as string | undefined;
  const schema = kind ? KINDS[kind] : undefined;
  if (!schema || !raw) return undefined;
  return { apiVersion: unknown.typeMeta.apiVersion, kind, ...decode(raw, schema) };
}
