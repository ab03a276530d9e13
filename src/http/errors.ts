// Turning errors into OCI error responses. The vocabulary itself (codes, OciError, the body) lives
// in src/oci/errors.ts so that every layer can throw without knowing about HTTP.
import { errorBody, OciError } from "../oci/errors.ts";
import { StoreFullError } from "../store/store.ts";

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
