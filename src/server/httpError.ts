// An answer other than success, with a message that says what to do; `extra` joins the JSON body (e.g. issues).
import type { FieldIssue } from '../core/jobSpec.js';

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export function badRequest(message: string, issues: FieldIssue[]): HttpError {
  return new HttpError(400, message, { issues });
}
