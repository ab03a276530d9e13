// HTTP helpers for e2e assertions: fetch a URL and read its body without hiding transfer errors,
// and parse multipart/byteranges bodies strictly.

export interface Transfer {
  status: number;
  headers: Headers;
  /** Bytes received before the body ended or failed. */
  body: Buffer;
  /** Declared Content-Length, if any (and the body was not encoded). */
  contentLength: number | undefined;
  /** Set when reading the body rejected (aborted connection, reset, …). */
  error: unknown;
  /** The transfer ended cleanly with every declared byte. */
  complete: boolean;
}

/** Fetch and read the whole body, recording (not throwing) a failure while reading it. */
export async function transfer(url: string, init: RequestInit = {}, timeoutMs = 60_000): Promise<Transfer> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  const cl = res.headers.get("content-length");
  // fetch inflates an encoded body (a gzipped bootstrap): its Content-Length counts the bytes as
  // sent, and a cut gzip stream fails the read instead.
  const contentLength = cl === null || res.headers.has("content-encoding") ? undefined : Number(cl);
  const chunks: Buffer[] = [];
  let error: unknown;
  if (res.body !== null) {
    const reader = res.body.getReader();
    try {
      for (let i = 0; i < 10_000_000; i++) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(Buffer.from(value));
      }
    } catch (err) {
      error = err;
    }
  }
  const body = Buffer.concat(chunks);
  const complete = error === undefined && (contentLength === undefined || body.length === contentLength);
  return { status: res.status, headers: res.headers, body, contentLength, error, complete };
}

/**
 * The error codes of an OCI error answer (`{"errors":[{"code","message"}]}`, each with a message);
 * throws, quoting the body, when the answer is not one.
 */
export function ociErrorCodes(t: Transfer): string[] {
  const text = t.body.toString("utf8");
  let doc: { errors?: { code?: unknown; message?: unknown }[] };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch {
    throw new Error(`status ${t.status} with a body that is not an OCI error: ${text.slice(0, 300)}`);
  }
  const errors = doc.errors ?? [];
  if (errors.length === 0 || errors.some((e) => typeof e.code !== "string" || typeof e.message !== "string" || e.message === "")) {
    throw new Error(`status ${t.status} with a malformed OCI error: ${text.slice(0, 300)}`);
  }
  return errors.map((e) => e.code as string);
}

export interface BytePart {
  headers: Record<string, string>;
  start: number;
  end: number;
  size: number;
  body: Buffer;
}

/** The boundary parameter of a multipart/byteranges Content-Type. */
export function boundaryOf(contentType: string | null): string {
  const m = /^multipart\/byteranges\s*;.*\bboundary=("?)([^";]+)\1/i.exec(contentType ?? "");
  if (m === null) throw new Error(`not multipart/byteranges with a boundary: ${contentType}`);
  return m[2]!;
}

/**
 * Parse a multipart/byteranges body (RFC 9110 §14.6): each part has a Content-Range header and exactly
 * that many bytes, parts are delimited by CRLF--boundary, the last delimiter is --boundary--.
 */
export function parseByteranges(body: Buffer, contentType: string | null): BytePart[] {
  const boundary = boundaryOf(contentType);
  const delim = Buffer.from(`--${boundary}`);
  const parts: BytePart[] = [];
  let pos = body.indexOf(delim);
  if (pos < 0) throw new Error("no boundary delimiter in body");
  if (body.subarray(0, pos).toString("latin1").trim() !== "") throw new Error("unexpected bytes before first boundary");
  for (let guard = 0; guard < 10_000; guard++) {
    pos += delim.length;
    if (body.subarray(pos, pos + 2).toString("latin1") === "--") return parts; // close delimiter
    // Transport padding (spaces/tabs) then CRLF.
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++;
    if (body.subarray(pos, pos + 2).toString("latin1") !== "\r\n") throw new Error(`no CRLF after boundary at ${pos}`);
    pos += 2;
    const headerEnd = body.indexOf("\r\n\r\n", pos);
    if (headerEnd < 0) throw new Error("unterminated part headers");
    const headers: Record<string, string> = {};
    const headerText = body.subarray(pos, headerEnd).toString("latin1");
    for (const line of headerText.split("\r\n")) {
      if (line === "") continue;
      const i = line.indexOf(":");
      if (i <= 0) throw new Error(`bad part header line: ${JSON.stringify(line)}`);
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(headers["content-range"] ?? "");
    if (cr === null) throw new Error(`part without a valid Content-Range: ${JSON.stringify(headers)}`);
    const start = Number(cr[1]);
    const end = Number(cr[2]);
    const dataStart = headerEnd + 4;
    const dataEnd = dataStart + (end - start + 1);
    if (dataEnd > body.length) throw new Error("part body shorter than its Content-Range");
    parts.push({ headers, start, end, size: cr[3] === "*" ? -1 : Number(cr[3]), body: body.subarray(dataStart, dataEnd) });
    pos = dataEnd;
    if (body.subarray(pos, pos + 2).toString("latin1") !== "\r\n") throw new Error(`no CRLF after part data at ${pos}`);
    pos += 2;
    if (!body.subarray(pos, pos + delim.length).equals(delim)) throw new Error(`no boundary after part at ${pos}`);
  }
  throw new Error("too many parts");
}

/**
 * An answer to a bootstrap request with Skiff-Params `params`. While an edge converts an image with
 * a codec other than none, it answers with the image's none conversion (same chunk size, Cache-Control
 * no-store): such answers are asked again, a bounded number of times. Anything else is returned as it is.
 */
export async function bootstrapWithParams<T extends { status: number; headers: Headers }>(params: string, ask: () => Promise<T>, tries = 400): Promise<T> {
  const standIn = params.replace(/^(v\d+-c\d+)-.*$/, "$1-none");
  for (let i = 1; ; i++) {
    const answer = await ask();
    const got = answer.headers.get("skiff-params");
    if (answer.status !== 200 || got === params || got !== standIn || answer.headers.get("cache-control") !== "no-store" || i === tries) return answer;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
