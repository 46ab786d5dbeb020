// Status error bodies, shaped as k8s.io/apimachinery/pkg/api/errors builds them.
export interface StatusCause {
  reason: string;
  message: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface StatusBody {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, never>;
  status: 'Failure' | 'Success';
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code?: number;
}

/** An API failure: thrown anywhere in the double, turned into its Status body by the HTTP layer. */
export class ApiError extends Error {
  constructor(readonly body: StatusBody) {
    super(body.message);
  }
  get code(): number {
    return this.body.code ?? 500;
  }
}

function failure(code: number, reason: string, message: string, details?: StatusDetails): ApiError {
  return new ApiError({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  });
}

/** GroupResource.String(): `jobs.batch`, or just `pods` for the core group. */
export function groupResource(group: string, resource: string): string {
  return group ? `${resource}.${group}` : resource;
}

// "Yes we set Kind field to resource" (errors.go): details.kind holds the resource in these errors.
function resourceDetails(group: string, resource: string, name?: string): StatusDetails {
  return { ...(name ? { name } : {}), group, kind: resource };
}

export function notFound(group: string, resource: string, name: string): ApiError {
  return failure(
    404,
    'NotFound',
    `${groupResource(group, resource)} "${name}" not found`,
    resourceDetails(group, resource, name),
  );
}

export function alreadyExists(group: string, resource: string, name: string): ApiError {
  return failure(
    409,
    'AlreadyExists',
    `${groupResource(group, resource)} "${name}" already exists`,
    resourceDetails(group, resource, name),
  );
}

export function conflict(group: string, resource: string, name: string, detail: string): ApiError {
  return failure(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${groupResource(group, resource)} "${name}": ${detail}`,
    resourceDetails(group, resource, name),
  );
}

/** One field error, as field.Error prints: `<field>: <body>`. */
export interface FieldError {
  type: string; // FieldValueRequired, FieldValueInvalid, …
  field: string;
  body: string; // "Required value", `Invalid value: "x": detail`, …
}

export function invalid(group: string, kind: string, name: string, errors: FieldError[]): ApiError {
  const texts = errors.map((e) => `${e.field}: ${e.body}`);
  // utilerrors.Aggregate: one error prints bare, several print as "[a, b]".
  const aggregate = texts.length === 1 ? texts[0] : `[${texts.join(', ')}]`;
  const qualifiedKind = group ? `${kind}.${group}` : kind;
  return failure(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${aggregate}`, {
    name,
    group,
    kind,
    causes: errors.map((e) => ({ reason: e.type, message: e.body, field: e.field })),
  });
}

export function forbidden(group: string, resource: string, name: string, message: string): ApiError {
  // errors.NewForbidden: "forbidden: …" without a resource, `jobs.batch "j" is forbidden: …` with one.
  const text = !resource
    ? `forbidden: ${message}`
    : `${name ? `${groupResource(group, resource)} "${name}"` : groupResource(group, resource)} is forbidden: ${message}`;
  return failure(403, 'Forbidden', text, resourceDetails(group, resource, name));
}

export function badRequest(message: string): ApiError {
  return failure(400, 'BadRequest', message);
}

export function methodNotSupported(group: string, resource: string, action: string): ApiError {
  return failure(
    405,
    'MethodNotAllowed',
    `${action} is not supported on resources of kind "${groupResource(group, resource)}"`,
    { group, kind: resource },
  );
}

export function unauthorized(): ApiError {
  return failure(401, 'Unauthorized', 'Unauthorized');
}

export function expired(message: string): ApiError {
  return failure(410, 'Expired', message);
}

export function unsupportedMediaType(contentType: string): ApiError {
  return failure(
    415,
    'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got ${contentType})`,
  );
}

export function pathNotFound(): ApiError {
  return failure(404, 'NotFound', 'the server could not find the requested resource', {});
}

export function internalError(message: string): ApiError {
  return failure(500, 'InternalError', `Internal error occurred: ${message}`, { causes: [{ reason: '', message }] });
}

export function timeoutError(message: string, retryAfterSeconds: number): ApiError {
  return failure(504, 'Timeout', `Timeout: ${message}`, { retryAfterSeconds });
}

export function success(group: string, resource: string, name: string, uid: string): StatusBody {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Success',
    details: { name, group, kind: resource, uid },
  };
}

// Field error bodies, as field.ErrorType prints them.
export const fieldErrors = {
  required: (field: string, detail = ''): FieldError => ({
    type: 'FieldValueRequired',
    field,
    body: detail ? `Required value: ${detail}` : 'Required value',
  }),
  invalid: (field: string, value: unknown, detail: string): FieldError => ({
    type: 'FieldValueInvalid',
    field,
    body: `Invalid value: ${printValue(value)}: ${detail}`,
  }),
  notSupported: (field: string, value: unknown, supported: string[]): FieldError => ({
    type: 'FieldValueNotSupported',
    field,
    body: `Unsupported value: ${printValue(value)}: supported values: ${supported.map((s) => `"${s}"`).join(', ')}`,
  }),
  duplicate: (field: string, value: unknown): FieldError => ({
    type: 'FieldValueDuplicate',
    field,
    body: `Duplicate value: ${printValue(value)}`,
  }),
  notFound: (field: string, value: unknown): FieldError => ({
    type: 'FieldValueNotFound',
    field,
    body: `Not found: ${printValue(value)}`,
  }),
  forbidden: (field: string, detail: string): FieldError => ({
    type: 'FieldValueForbidden',
    field,
    body: `Forbidden: ${detail}`,
  }),
  tooLong: (field: string, max: number): FieldError => ({
    type: 'FieldValueTooLong',
    field,
    body: `Too long: must have at most ${max} bytes`,
  }),
};

/** field.Error quotes strings and prints numbers bare. */
function printValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}
