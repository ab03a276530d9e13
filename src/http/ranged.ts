// Serves an immutable byte sequence of known size with conditional and Range semantics (RFC 9110):
// 200, 206 (single range or multipart/byteranges), 304 and 416. Shared by every route that serves
// content-addressed bytes, so they all answer ranges the same way.
import type { ContentStore } from "../store/store.ts";
import { OciError } from "../oci/errors.ts";
import { contentRange, ifRangeAllows, multipartByteranges, parseRange, unsatisfiedRange, type ByteRange } from "./range.ts";

export interface RangedSource {
  size: number;
  /** Strong validator, quoted: `"sha256:…"`. */
  etag: string;
  contentType: string;
  /** Headers every answer carries (digest, cache policy…). */
  headers: Record<string, string>;
  read(span?: { offset: number; length: number }): Promise<ReadableStream<Uint8Array>>;
  /** The same bytes at once, when the source can read a small span faster that way. */
  readBytes?(span: { offset: number; length: number }): Promise<Uint8Array<ArrayBuffer>>;
}

// Single ranges up to this size go out as one buffer when the source can read them so: most range
// requests of lazy clients, and the response needs no stream machinery.
export const SMALL_BODY = 1 << 20;

export interface Served {
  response: Response;
  /** Body bytes the response will send (for metrics). */
  bytes: number;
}

export async function serveRanged(request: Request, src: RangedSource, maxRanges = 100): Promise<Served> {
  const head = request.method === "HEAD";
  const headers = new Headers(src.headers);
  headers.set("ETag", src.etag);
  headers.set("Accept-Ranges", "bytes");

  if (etagListMatches(request.headers.get("if-none-match"), src.etag)) {
    return { response: new Response(null, { status: 304, headers }), bytes: 0 };
  }

  const rangeHeader = head ? null : request.headers.get("range");
  const wanted = rangeHeader && ifRangeAllows(request.headers.get("if-range"), src.etag) ? parseRange(rangeHeader, src.size, maxRanges) : ({ kind: "none" } as const);

  if (wanted.kind === "unsatisfiable") {
    throw new OciError("RANGE_INVALID", `requested range not satisfiable for ${src.size} bytes`, {
      headers: { "Content-Range": unsatisfiedRange(src.size), "Accept-Ranges": "bytes" },
    });
  }

  if (wanted.kind === "ranges" && wanted.ranges.length === 1) {
    const r = wanted.ranges[0]!;
    const length = r.end - r.start + 1;
    const span = { offset: r.start, length };
    const body = length <= SMALL_BODY && src.readBytes ? await src.readBytes(span) : await src.read(span);
    return { response: new Response(body, { status: 206, headers: singleRangeHeaders(src, r) }), bytes: length };
  }

  if (wanted.kind === "ranges") {
    const readPart = (r: ByteRange) => src.read({ offset: r.start, length: r.end - r.start + 1 });
    const multipart = multipartByteranges(wanted.ranges, src.size, src.contentType, readPart);
    headers.set("Content-Type", multipart.contentType);
    headers.set("Content-Length", String(multipart.length));
    return { response: new Response(multipart.body, { status: 206, headers }), bytes: multipart.length };
  }

  headers.set("Content-Type", src.contentType);
  headers.set("Content-Length", String(src.size));
  if (head) return { response: new Response(null, { status: 200, headers }), bytes: 0 };
  return { response: new Response(await src.read(), { status: 200, headers }), bytes: src.size };
}

/** The headers of a 206 answer with the one range `r` of `src`. */
export function singleRangeHeaders(src: Pick<RangedSource, "size" | "etag" | "contentType" | "headers">, r: ByteRange): Record<string, string> {
  return {
    ...src.headers,
    ETag: src.etag,
    "Accept-Ranges": "bytes",
    "Content-Type": src.contentType,
    "Content-Range": contentRange(r, src.size),
    "Content-Length": String(r.end - r.start + 1),
  };
}

/** If-None-Match: `*` or a list of entity tags, compared weakly (RFC 9110 §13.1.2). */
export function etagListMatches(header: string | null, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  const ours = etag.replace(/^W\//, "");
  return header.split(",").some((t) => t.trim().replace(/^W\//, "") === ours);
}

/**
 * Reads for a region of a stored object (a whole blob, or one chunk inside a data blob); spans are
 * relative to the region. `missing` makes the error for an object that has vanished.
 */
export function storedRegion(store: ContentStore, key: string, region: { offset: number; length: number }, missing: () => Error | Promise<Error>): Pick<RangedSource, "read" | "readBytes"> {
  const absolute = (span?: { offset: number; length: number }) => (span ? { offset: region.offset + span.offset, length: span.length } : region);
  return {
    read: async (span) => (await store.get(key, absolute(span))) ?? Promise.reject(await missing()),
    readBytes: store.readSpan ? async (span) => (await store.readSpan!(key, absolute(span))) ?? Promise.reject(await missing()) : undefined,
  };
}
