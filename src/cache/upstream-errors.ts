// Turns an upstream failure into the OCI error a client of the mirror should see.
import { OciError, type ErrorCode } from "../http/errors.ts";
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
    case 429: {
      const headers: Record<string, string> = {};
      const retryAfter = res.headers.get("retry-after");
      if (retryAfter && /^\d+$/.test(retryAfter.trim())) headers["Retry-After"] = retryAfter.trim();
      return new OciError("TOOMANYREQUESTS", `upstream rate limit reached for ${what}${suffix}`, { headers });
    }
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
