// Turns an upstream failure into the OCI error a client of the mirror should see.
import { OciError, type ErrorCode } from "./errors.ts";
import { parseRetryAfter } from "../util/retry-after.ts";
import { readPrefix } from "../util/streams.ts";

export type ObjectKind = "blob" | "manifest" | "tags";

const UNKNOWN_CODE: Record<ObjectKind, ErrorCode> = { blob: "BLOB_UNKNOWN", manifest: "MANIFEST_UNKNOWN", tags: "NAME_UNKNOWN" };

/** Reads (and so releases) the upstream body, keeping the upstream's own message when it has one. */
export async function upstreamError(res: Response, kind: ObjectKind, what: string): Promise<OciError> {
  const message = await upstreamMessage(res);
  const suffix = message ? `: ${message}` : "";
  switch (res.status) {
    case 404:
      return new OciError(UNKNOWN_CODE[kind], `${what} not found upstream${suffix}`);
    case 401:
    case 403:
      return new OciError("DENIED", `upstream denied access to ${what} (HTTP ${res.status})${suffix}`);
    case 429:
      return new OciError("TOOMANYREQUESTS", `upstream rate limit reached for ${what}${suffix}`, { headers: rateLimitHeaders(res.headers) });
    default:
      return new OciError("UNAVAILABLE", `upstream answered HTTP ${res.status} for ${what}${suffix}`);
  }
}

async function upstreamMessage(res: Response): Promise<string> {
  try {
    if (!res.body) return "";
    const text = new TextDecoder().decode(await readPrefix(res.body, 4096));
    const parsed = JSON.parse(text) as { errors?: { message?: unknown }[] };
    const msg = parsed.errors?.[0]?.message;
    return typeof msg === "string" ? msg.slice(0, 200) : "";
  } catch {
    return "";
  }
}

const DEFAULT_RETRY_AFTER_S = 60;

/**
 * What a client of the mirror needs to back off: `Retry-After` in seconds (the upstream's, given as
 * seconds or a date, else its `RateLimit-Reset`, else a minute), and Docker Hub's `RateLimit-Limit` /
 * `RateLimit-Remaining` as sent.
 */
export function rateLimitHeaders(upstream: Headers, now = Date.now()): Record<string, string> {
  const headers: Record<string, string> = { "Retry-After": String(retryAfterSeconds(upstream, now)) };
  for (const name of ["RateLimit-Limit", "RateLimit-Remaining"]) {
    const value = upstream.get(name);
    if (value && /^[\w;=., -]{1,100}$/.test(value)) headers[name] = value;
  }
  return headers;
}

function retryAfterSeconds(upstream: Headers, now: number): number {
  const ms = parseRetryAfter(upstream.get("retry-after"), now);
  if (ms !== null) return Math.ceil(ms / 1000);
  const reset = upstream.get("ratelimit-reset")?.trim();
  if (reset && /^\d{1,9}$/.test(reset)) return Number(reset);
  return DEFAULT_RETRY_AFTER_S;
}
