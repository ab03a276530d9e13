// A strict multipart/byteranges parser (RFC 9110 §14.6) for check-ranges: every part needs a
// Content-Range and exactly that many bytes, and the close delimiter must be there. Errors say what
// is wrong in one line.

export interface BytePart {
  contentRange: string;
  start: number;
  end: number;
  /** Complete length after the slash; undefined for `*`. */
  size: number | undefined;
  data: Uint8Array;
}

/** The boundary parameter of a multipart/byteranges Content-Type, or undefined when it is not one. */
export function byterangesBoundary(contentType: string | null): string | undefined {
  const m = /^\s*multipart\/byteranges\s*;(?:.*;)?\s*boundary=("?)([^";]+)\1\s*(?:;|$)/i.exec(contentType ?? "");
  return m?.[2];
}

// Byte-for-character view, so header text and indexes line up with the bytes (any byte is one char).
function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return s;
}

export function parseByteranges(body: Uint8Array, boundary: string): BytePart[] {
  const text = latin1(body);
  const delim = `--${boundary}`;
  let pos = text.indexOf(delim);
  if (pos < 0) throw new Error("no boundary delimiter in the body");
  if (text.slice(0, pos).trim() !== "") throw new Error("bytes before the first boundary");
  const parts: BytePart[] = [];
  for (let guard = 0; guard < 1000; guard++) {
    pos += delim.length;
    if (text.startsWith("--", pos)) return parts; // close delimiter
    while (text[pos] === " " || text[pos] === "\t") pos++; // transport padding
    if (text.slice(pos).trim() === "") throw new Error("body ends without the final boundary");
    if (!text.startsWith("\r\n", pos)) throw new Error(`no CRLF after boundary ${parts.length + 1}`);
    const headerEnd = text.indexOf("\r\n\r\n", pos);
    if (headerEnd < 0) throw new Error(`part ${parts.length + 1}: unterminated headers`);
    let contentRange = "";
    for (const line of text.slice(pos + 2, headerEnd).split("\r\n")) {
      const i = line.indexOf(":");
      if (i > 0 && line.slice(0, i).trim().toLowerCase() === "content-range") contentRange = line.slice(i + 1).trim();
    }
    const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange);
    if (cr === null) throw new Error(`part ${parts.length + 1}: no valid Content-Range (${JSON.stringify(contentRange)})`);
    const start = Number(cr[1]);
    const end = Number(cr[2]);
    const dataStart = headerEnd + 4;
    const dataEnd = dataStart + (end - start + 1);
    if (end < start || dataEnd > text.length) throw new Error(`part "${contentRange}": body shorter than its Content-Range`);
    parts.push({ contentRange, start, end, size: cr[3] === "*" ? undefined : Number(cr[3]), data: body.subarray(dataStart, dataEnd) });
    pos = dataEnd;
    if (!text.startsWith(`\r\n${delim}`, pos)) {
      const why = text.slice(pos).trim() === "" ? "body ends without the final boundary" : "no boundary right after its bytes (wrong length)";
      throw new Error(`part "${contentRange}": ${why}`);
    }
    pos += 2;
  }
  throw new Error("more than 1000 parts");
}
