// Who may do what: requests mapped to authorization attributes the way the apiserver's RequestInfoFactory maps
// them, checked against rbac.authorization.k8s.io/v1 PolicyRules, and the Forbidden message the apiserver writes.
import { forbidden } from './status.js';

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

export interface RequestInfo {
  isResourceRequest: boolean;
  path: string;
  verb: string;
  apiGroup: string;
  apiVersion: string;
  namespace: string;
  resource: string;
  subresource: string;
  name: string;
  /** The path segments after /api/v1 or /apis/<group>/<version>, without the legacy "watch" prefix. */
  parts: string[];
}

export interface Subject {
  kind: 'admin' | 'executor';
  /** The user name the apiserver would report (RBAC messages name it). */
  username: string;
  groups: string[];
  /** undefined: everything is allowed (the admin). */
  rules?: PolicyRule[];
}

const VERB_BY_METHOD: Record<string, string> = { POST: 'create', PUT: 'update', PATCH: 'patch' };

/** RequestInfoFactory.NewRequestInfo, for the /api and /apis prefixes. */
export function requestInfo(method: string, path: string, query: URLSearchParams): RequestInfo {
  const segments = path.split('/').filter((s) => s !== '');
  const info: RequestInfo = {
    isResourceRequest: false,
    path,
    verb: method.toLowerCase(),
    apiGroup: '',
    apiVersion: '',
    namespace: '',
    resource: '',
    subresource: '',
    name: '',
    parts: [],
  };
  let parts: string[];
  if (segments[0] === 'api' && segments.length >= 2) {
    info.apiVersion = segments[1];
    parts = segments.slice(2);
  } else if (segments[0] === 'apis' && segments.length >= 3) {
    info.apiGroup = segments[1];
    info.apiVersion = segments[2];
    parts = segments.slice(3);
  } else {
    return info;
  }
  if (parts.length === 0) return info;
  info.isResourceRequest = true;

  let legacyWatch = false;
  if (parts[0] === 'watch') {
    legacyWatch = true;
    parts = parts.slice(1);
  }
  if (parts[0] === 'namespaces' && parts.length > 1) {
    info.namespace = parts[1];
    // /namespaces/{ns}/status and /finalize are subresources of the namespace itself.
    if (parts.length > 2 && parts[2] !== 'status' && parts[2] !== 'finalize') parts = parts.slice(2);
  }
  info.parts = parts;
  info.resource = parts[0] ?? '';
  info.name = parts[1] ?? '';
  info.subresource = parts[2] ?? '';

  const watchParam = query.get('watch');
  const isWatch = legacyWatch || watchParam === 'true' || watchParam === '1';
  switch (method) {
    case 'GET':
    case 'HEAD':
      info.verb = isWatch ? 'watch' : info.name ? 'get' : 'list';
      break;
    case 'DELETE':
      info.verb = info.name ? 'delete' : 'deletecollection';
      break;
    default:
      info.verb = VERB_BY_METHOD[method] ?? method.toLowerCase();
  }
  return info;
}

export interface Attributes {
  verb: string;
  apiGroup: string;
  resource: string;
  subresource: string;
  name: string;
  namespace: string;
  /** For non-resource requests. */
  path?: string;
}

/** Paths every authenticated user may GET (system:discovery, system:basic-user, system:public-info-viewer). */
const PUBLIC_PATHS = [
  /^\/version\/?$/,
  /^\/api(\/.*)?$/,
  /^\/apis(\/.*)?$/,
  /^\/openapi(\/.*)?$/,
  /^\/(healthz|livez|readyz)$/,
];

export function isAllowed(subject: Subject, attrs: Attributes): boolean {
  if (!subject.rules) return true;
  if (attrs.path !== undefined) return attrs.verb === 'get' && PUBLIC_PATHS.some((p) => p.test(attrs.path!));
  // Every authenticated user may review its own access (system:basic-user).
  if (
    attrs.apiGroup === 'authorization.k8s.io' &&
    attrs.verb === 'create' &&
    (attrs.resource === 'selfsubjectaccessreviews' || attrs.resource === 'selfsubjectrulesreviews')
  ) {
    return true;
  }
  return subject.rules.some((rule) => ruleAllows(rule, attrs));
}

/** rbac/v1 RuleAllows: verb, group, resource ("pods/log" for subresources, "*" and "*\/log" wildcards), name. */
function ruleAllows(rule: PolicyRule, attrs: Attributes): boolean {
  const verbOk = rule.verbs.includes('*') || rule.verbs.includes(attrs.verb);
  const groupOk = rule.apiGroups.includes('*') || rule.apiGroups.includes(attrs.apiGroup);
  const combined = attrs.subresource ? `${attrs.resource}/${attrs.subresource}` : attrs.resource;
  const resourceOk = rule.resources.some(
    (r) => r === '*' || r === combined || (attrs.subresource !== '' && r === `*/${attrs.subresource}`),
  );
  const nameOk = !rule.resourceNames?.length || (attrs.name !== '' && rule.resourceNames.includes(attrs.name));
  return verbOk && groupOk && resourceOk && nameOk;
}

/** The 403 the apiserver writes (endpoints/handlers/responsewriters forbiddenMessage + errors.NewForbidden). */
export function forbiddenError(subject: Subject, attrs: Attributes) {
  if (attrs.path !== undefined) {
    return forbidden('', '', '', `User "${subject.username}" cannot ${attrs.verb} path "${attrs.path}"`);
  }
  const resource = attrs.subresource ? `${attrs.resource}/${attrs.subresource}` : attrs.resource;
  const scope = attrs.namespace ? `in the namespace "${attrs.namespace}"` : 'at the cluster scope';
  return forbidden(
    attrs.apiGroup,
    attrs.resource,
    attrs.name,
    `User "${subject.username}" cannot ${attrs.verb} resource "${resource}" in API group "${attrs.apiGroup}" ${scope}`,
  );
}

/** The `status` of a SelfSubjectAccessReview for `spec`, as the RBAC authorizer fills it in. */
export function reviewAccess(subject: Subject, spec: Record<string, unknown>): Record<string, unknown> {
  const res = spec.resourceAttributes as Record<string, string> | undefined;
  const nonRes = spec.nonResourceAttributes as Record<string, string> | undefined;
  const attrs: Attributes = res
    ? {
        verb: res.verb ?? '',
        apiGroup: res.group ?? '',
        resource: res.resource ?? '',
        subresource: res.subresource ?? '',
        name: res.name ?? '',
        namespace: res.namespace ?? '',
      }
    : {
        verb: nonRes?.verb ?? '',
        apiGroup: '',
        resource: '',
        subresource: '',
        name: '',
        namespace: '',
        path: nonRes?.path ?? '',
      };
  if (!isAllowed(subject, attrs)) return { allowed: false };
  return {
    allowed: true,
    reason:
      subject.kind === 'admin'
        ? 'RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group "system:masters"'
        : `RBAC: allowed by RoleBinding "executor" of Role "executor" to ServiceAccount "${subject.username.split(':').pop()}"`,
  };
}

/** The rules a SelfSubjectRulesReview reports for a namespace. */
export function rulesFor(subject: Subject): PolicyRule[] {
  return subject.rules ?? [{ apiGroups: ['*'], resources: ['*'], verbs: ['*'] }];
}
