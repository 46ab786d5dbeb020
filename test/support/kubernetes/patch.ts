// PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge patch read as a merge patch.
import { badRequest, unsupportedMediaType } from './status.js';
import { clone, isPlainObject, type KubeObject } from './util.js';

export function applyPatch(target: KubeObject, contentType: string, patch: unknown): KubeObject {
  const type = contentType.split(';')[0].trim().toLowerCase();
  switch (type) {
    case 'application/merge-patch+json':
      return mergePatch(clone(target), patch) as KubeObject;
    case 'application/strategic-merge-patch+json':
      // Simplified: lists are replaced whole instead of merged by key; the patch directives ($patch,
      // $setElementOrder/…, $retainKeys) are dropped.
      return mergePatch(clone(target), withoutDirectives(patch)) as KubeObject;
    case 'application/json-patch+json':
      return jsonPatch(clone(target), patch);
    default:
      throw unsupportedMediaType(type);
  }
}

function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return patch;
  const out: KubeObject = isPlainObject(target) ? target : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

function withoutDirectives(patch: unknown): unknown {
  if (Array.isArray(patch)) return patch.map(withoutDirectives);
  if (!isPlainObject(patch)) return patch;
  const out: KubeObject = {};
  for (const [key, value] of Object.entries(patch)) if (!key.startsWith('$')) out[key] = withoutDirectives(value);
  return out;
}

function jsonPatch(doc: KubeObject, ops: unknown): KubeObject {
  if (!Array.isArray(ops)) throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let root: unknown = doc;
  for (const op of ops as { op: string; path: string; value?: unknown; from?: string }[]) {
    switch (op.op) {
      case 'add':
        root = pointerSet(root, op.path, clone(op.value), 'add');
        break;
      case 'replace':
        pointerGet(root, op.path);
        root = pointerSet(root, op.path, clone(op.value), 'replace');
        break;
      case 'remove':
        pointerGet(root, op.path);
        root = pointerRemove(root, op.path);
        break;
      case 'test':
        if (JSON.stringify(pointerGet(root, op.path)) !== JSON.stringify(op.value))
          throw new JsonPatchError(`testing value ${op.path} failed`);
        break;
      case 'move': {
        const value = pointerGet(root, op.from ?? '');
        root = pointerRemove(root, op.from ?? '');
        root = pointerSet(root, op.path, value, 'add');
        break;
      }
      case 'copy':
        root = pointerSet(root, op.path, clone(pointerGet(root, op.from ?? '')), 'add');
        break;
      default:
        throw badRequest(`Unexpected kind: ${op.op}`);
    }
  }
  if (!isPlainObject(root)) throw badRequest('the patch did not leave an object');
  return root;
}

/** A JSON patch that does not apply is a 422 in the apiserver ("the server rejected our request…"). */
export class JsonPatchError extends Error {}

function parsePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new JsonPatchError(`invalid JSON pointer ${path}`);
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function pointerGet(root: unknown, path: string): unknown {
  let at: unknown = root;
  for (const part of parsePointer(path)) {
    if (Array.isArray(at)) at = at[Number(part)];
    else if (isPlainObject(at)) at = at[part];
    else at = undefined;
    if (at === undefined) throw new JsonPatchError(`doc is missing path: "${path}": missing value`);
  }
  return at;
}

function pointerSet(root: unknown, path: string, value: unknown, mode: 'add' | 'replace'): unknown {
  const parts = parsePointer(path);
  if (parts.length === 0) return value;
  const parent = pointerGet(root, '/' + parts.slice(0, -1).map(escapePart).join('/')) as unknown;
  const last = parts[parts.length - 1];
  if (Array.isArray(parent)) {
    const index = last === '-' ? parent.length : Number(last);
    if (!Number.isInteger(index) || index < 0 || index > parent.length)
      throw new JsonPatchError(`Unable to access invalid index: ${last}`);
    if (mode === 'add') parent.splice(index, 0, value);
    else parent[index] = value;
  } else if (isPlainObject(parent)) {
    parent[last] = value;
  } else {
    throw new JsonPatchError(`doc is missing path: "${path}"`);
  }
  return root;
}

function pointerRemove(root: unknown, path: string): unknown {
  const parts = parsePointer(path);
  const parent = pointerGet(root, '/' + parts.slice(0, -1).map(escapePart).join('/')) as unknown;
  const last = parts[parts.length - 1];
  if (Array.isArray(parent)) parent.splice(Number(last), 1);
  else if (isPlainObject(parent)) delete parent[last];
  return root;
}

function escapePart(part: string): string {
  return part.replace(/~/g, '~0').replace(/\//g, '~1');
}
