// HTTP Range requests (RFC 9110 §14) for byte ranges of a representation whose size is known.

/** An inclusive byte range: `end` is the last byte served. */
export type ByteRange = { start: number; end: number };

export type RangeRequest =
  | { kind: "none" }
  | { kind: "ranges"; ranges: ByteRange[] }
  | { kind: "unsatisfiable" }
  | { kind: "ignored"; reason: string };

const NONE: RangeRequest = { kind: "none" };
const UNSATISFIABLE: RangeRequest = { kind: "unsatisfiable" };

const ignored = (reason: string): RangeRequest => ({ kind: "ignored", reason });

/** Strips optional whitespace (OWS: SP / HTAB) only, not every Unicode space. */
const trimOws = (s: string): string => s.replace(/^[ \t]+|[ \t]+$/g, "");

/**
 * Parses a Range header against a representation of `size` bytes.
 *
 * An invalid header is `ignored` (RFC 9110 §14.2: the server then answers 200 with the whole
 * representation); `unsatisfiable` means a 416. Ranges that start at or past the end are dropped
 * as long as at least one range remains. Ranges that overlap or touch are coalesced, which sorts
 * them; a set without overlaps keeps the client's order, as §14.6 asks of multipart responses.
 */
export function parseRange(
  header: string | null | undefined,
  size: number,
  maxRanges = 100,
): RangeRequest {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`invalid representation size ${size}`);
  if (header === null || header === undefined) return NONE;

  const eq = header.indexOf("=");
  if (eq < 0) return ignored("missing range unit");
  const unit = trimOws(header.slice(0, eq));
  if (unit.toLowerCase() !== "bytes") return ignored(`unsupported range unit ${JSON.stringify(unit)}`);

  // range-set is a #list: empty elements ("0-1,,2-3") are legal and skipped (RFC 9110 §5.6.1).
  const specs = header
    .slice(eq + 1)
    .split(",")
    .map(trimOws)
    .filter((s) => s !== "");
  if (specs.length === 0) return ignored("empty range set");
  if (specs.length > maxRanges) return ignored(`more than ${maxRanges} ranges requested`);

  const satisfiable: ByteRange[] = [];
  for (const spec of specs) {
    const m = /^([0-9]*)-([0-9]*)$/.exec(spec);
    if (m === null || (m[1] === "" && m[2] === "")) return ignored(`invalid range ${JSON.stringify(spec)}`);
    const first = m[1] === "" ? undefined : Number(m[1]);
    const last = m[2] === "" ? undefined : Number(m[2]);
    if ((first !== undefined && !Number.isSafeInteger(first)) || (last !== undefined && !Number.isSafeInteger(last))) {
      return ignored(`range value too large in ${JSON.stringify(spec)}`);
    }
    if (first === undefined) {
      // Suffix range "-n": the last n bytes, or the whole representation when it is shorter.
      if (last === 0 || size === 0) continue;
      satisfiable.push({ start: Math.max(0, size - last!), end: size - 1 });
      continue;
    }
    if (last !== undefined && last < first) return ignored(`range ${JSON.stringify(spec)} ends before it starts`);
    if (first >= size) continue;
    satisfiable.push({ start: first, end: last === undefined ? size - 1 : Math.min(last, size - 1) });
  }

  if (satisfiable.length === 0) return UNSATISFIABLE;
  return { kind: "ranges", ranges: coalesce(satisfiable) };
}

/** Merges overlapping or adjacent ranges; returns the input untouched when nothing merges. */
function coalesce(ranges: ByteRange[]): ByteRange[] {
  if (ranges.length < 2) return ranges;
  const sorted = [...ranges].sort((a, b) => a.start - b.start || a.end - b.end);
  const merged: ByteRange[] = [];
  for (const r of sorted) {
    const previous = merged[merged.length - 1];
    if (previous !== undefined && r.start <= previous.end + 1) previous.end = Math.max(previous.end, r.end);
    else merged.push({ start: r.start, end: r.end });
  }
  return merged.length === ranges.length ? ranges : merged;
}

/**
 * Whether a Range request may be honoured given its If-Range header (RFC 9110 §13.1.5).
 *
 * If-Range needs a strong match: a weak tag never matches, and an HTTP-date never matches because
 * these responses carry no Last-Modified. A present but malformed value (including "") does not
 * match either, so the client gets the whole representation. `etag` is the ETag header value as
 * sent; a bare value without quotes is treated as the opaque tag itself.
 */
export function ifRangeAllows(ifRange: string | null | undefined, etag: string): boolean {
  if (ifRange === null || ifRange === undefined) return true;
  const candidate = trimOws(ifRange);
  if (!/^"[^"]*"$/.test(candidate)) return false;
  // A weak `etag` keeps its W/ prefix and so can never equal the strong-shaped candidate.
  const ours = etag.startsWith('"') || etag.startsWith("W/") ? etag : `"${etag}"`;
  return candidate === ours;
}

/** Content-Range value for a 206 part: `bytes start-end/size`. */
export function contentRange(r: ByteRange, size: number): string {
  return `bytes ${r.start}-${r.end}/${size}`;
}

/** Content-Range value for a 416: `bytes *\/size`. */
export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`;
}

// RFC 2046 §5.1.1 bcharsnospace: the boundary may not end in a space, so spaces are left out.
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=?]{1,70}$/;
// Characters outside an RFC 9110 token force the boundary parameter to be quoted.
const NEEDS_QUOTES = /[^0-9A-Za-z!#$%&'*+\-.^_`|~]/;

function randomBoundary(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Builds a streaming `multipart/byteranges` body (RFC 9110 §14.6) whose exact byte length is
 * known before any part is read, so the response can carry Content-Length.
 *
 * Parts are read one at a time and only when the consumer pulls, so memory stays flat. A part
 * stream that yields more or fewer bytes than its range errors the body, since the promised
 * length would otherwise be a lie. An empty `contentType` omits the parts' Content-Type header.
 */
export function multipartByteranges(
  ranges: ByteRange[],
  size: number,
  contentType: string,
  readRange: (r: ByteRange) => Promise<ReadableStream<Uint8Array>>,
  boundary: string = randomBoundary(),
): { body: ReadableStream<Uint8Array>; contentType: string; length: number } {
  if (!BOUNDARY.test(boundary)) throw new RangeError(`invalid multipart boundary ${JSON.stringify(boundary)}`);
  if (ranges.length === 0) throw new RangeError("multipart/byteranges needs at least one range");
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start < 0 || r.end < r.start || r.end >= size) {
      throw new RangeError(`range ${r.start}-${r.end} does not fit a representation of ${size} bytes`);
    }
  }

  const encoder = new TextEncoder();
  const typeLine = contentType === "" ? "" : `Content-Type: ${contentType}\r\n`;
  // Layout: for each part "--B CRLF headers CRLF data CRLF", then "--B--" CRLF. The CRLF after
  // each part's data is the one that belongs to the next delimiter (RFC 2046 §5.1.1).
  const pieces: (Uint8Array | ByteRange)[] = [];
  let length = 0;
  const crlf = encoder.encode("\r\n");
  for (const r of ranges) {
    const head = encoder.encode(`--${boundary}\r\n${typeLine}Content-Range: ${contentRange(r, size)}\r\n\r\n`);
    pieces.push(head, r, crlf);
    length += head.byteLength + (r.end - r.start + 1) + crlf.byteLength;
  }
  const close = encoder.encode(`--${boundary}--\r\n`);
  pieces.push(close);
  length += close.byteLength;

  let next = 0;
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let remaining = 0;

  const body = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        for (;;) {
          if (reader !== undefined) {
            const { done, value } = await reader.read();
            if (done) {
              reader = undefined;
              if (remaining !== 0) throw new Error(`byte range part ended ${remaining} bytes early`);
              continue;
            }
            if (value.byteLength > remaining) {
              const extra = reader;
              reader = undefined;
              await extra.cancel();
              throw new Error("byte range part is longer than its range");
            }
            remaining -= value.byteLength;
            if (value.byteLength === 0) continue;
            controller.enqueue(value);
            return;
          }
          const piece = pieces[next++];
          if (piece === undefined) {
            controller.close();
            return;
          }
          if (piece instanceof Uint8Array) {
            controller.enqueue(piece);
            return;
          }
          remaining = piece.end - piece.start + 1;
          reader = (await readRange(piece)).getReader();
        }
      },
      async cancel(reason) {
        await reader?.cancel(reason);
      },
    },
    // Pull only on demand so no part is opened before the consumer wants its bytes.
    { highWaterMark: 0 },
  );

  const param = NEEDS_QUOTES.test(boundary) ? `"${boundary}"` : boundary;
  return { body, contentType: `multipart/byteranges; boundary=${param}`, length };
}
