// OCI distribution-spec error responses: `{"errors":[{"code","message","detail"}]}` with the status
// the spec (or the Distribution registry, for codes the spec leaves out) pairs with each code.
import { StoreFullError } from "../store/store.ts";

export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  TAG_INVALID: 400,
  SIZE_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 502,
  UNKNOWN: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** An error that maps to one OCI error response. Thrown anywhere below the routes. */
export class OciError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message: string, opts: { status?: number; detail?: unknown; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = "OciError";
    this.code = code;
    this.status = opts.status ?? ERROR_STATUS[code];
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }
}

export function errorBody(code: ErrorCode, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, ...(detail === undefined ? {} : { detail }) }] });
}

/** The answer to an OCI error as plain parts, for a caller that writes it without a Response. */
export function errorAnswer(err: OciError, method = "GET"): { status: number; headers: Record<string, string>; body: Uint8Array<ArrayBuffer> | null } {
  const body = new TextEncoder().encode(errorBody(err.code, err.message, err.detail));
  const headers = { ...err.headers, "Content-Type": "application/json; charset=utf-8", "Content-Length": String(body.byteLength) };
  return { status: err.status, headers, body: method === "HEAD" ? null : body };
}

export function errorResponse(err: OciError, method = "GET"): Response {
  const { status, headers, body } = errorAnswer(err, method);
  return new Response(body, { status, headers });
}

/** Maps anything thrown to an OCI error; unexpected failures become UNKNOWN without internals. */
export function toOciError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  // 507 Insufficient Storage: the proxy's own trouble, retryable, and said plainly.
  if (err instanceof StoreFullError) return new OciError("UNAVAILABLE", err.message, { status: 507 });
  return new OciError("UNKNOWN", "internal error");
}
