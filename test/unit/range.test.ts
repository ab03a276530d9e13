import { describe, expect, it } from "vitest";
import { readAll } from "../../src/util/streams.ts";
import {
  type ByteRange,
  contentRange,
  ifRangeAllows,
  multipartByteranges,
  parseRange,
  unsatisfiedRange,
} from "../../src/http/range.ts";

const ranges = (...r: [number, number][]) => ({ kind: "ranges", ranges: r.map(([start, end]) => ({ start, end })) });

describe("parseRange", () => {
  it("reports no Range header as none", () => {
    expect(parseRange(null, 100)).toEqual({ kind: "none" });
    expect(parseRange(undefined, 100)).toEqual({ kind: "none" });
  });

  it("parses closed, open-ended and suffix ranges", () => {
    expect(parseRange("bytes=0-9", 100)).toEqual(ranges([0, 9]));
    expect(parseRange("bytes=90-", 100)).toEqual(ranges([90, 99]));
    expect(parseRange("bytes=-10", 100)).toEqual(ranges([90, 99]));
    expect(parseRange("bytes=99-99", 100)).toEqual(ranges([99, 99]));
  });

  it("clamps a long suffix to the whole representation and a late end to its last byte", () => {
    expect(parseRange("bytes=-500", 100)).toEqual(ranges([0, 99]));
    expect(parseRange("bytes=50-1000", 100)).toEqual(ranges([50, 99]));
  });

  it("accepts a case-insensitive unit, whitespace around values and empty list elements", () => {
    expect(parseRange("BYTES=0-1", 100)).toEqual(ranges([0, 1]));
    expect(parseRange("Bytes= 0-1 ,\t5-6 , ,", 100)).toEqual(ranges([0, 1], [5, 6]));
  });

  it("keeps the request order of ranges that do not touch", () => {
    expect(parseRange("bytes=50-59,0-9,-5", 100)).toEqual(ranges([50, 59], [0, 9], [95, 99]));
  });

  it("coalesces overlapping and adjacent ranges, sorting them", () => {
    expect(parseRange("bytes=20-29,0-9,10-12,25-40,80-", 100)).toEqual(ranges([0, 12], [20, 40], [80, 99]));
  });

  it("returns a single range when coalescing leaves one", () => {
    expect(parseRange("bytes=0-9,5-20,-90", 100)).toEqual(ranges([0, 99]));
    expect(parseRange("bytes=3-4,3-4", 100)).toEqual(ranges([3, 4]));
  });

  it("drops unsatisfiable ranges while another is satisfiable", () => {
    expect(parseRange("bytes=200-300,0-1,100-", 100)).toEqual(ranges([0, 1]));
  });

  it("is unsatisfiable when no range is", () => {
    expect(parseRange("bytes=100-", 100)).toEqual({ kind: "unsatisfiable" });
    expect(parseRange("bytes=100-200,150-", 100)).toEqual({ kind: "unsatisfiable" });
    expect(parseRange("bytes=-0", 100)).toEqual({ kind: "unsatisfiable" });
  });

  it("finds nothing satisfiable in an empty representation", () => {
    for (const h of ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-100"]) {
      expect(parseRange(h, 0)).toEqual({ kind: "unsatisfiable" });
    }
  });

  it("ignores invalid syntax", () => {
    for (const h of [
      "",
      "bytes",
      "bytes=",
      "bytes=,",
      "bytes=-",
      "bytes=a-b",
      "bytes=1-2-3",
      "bytes=+1-2",
      "bytes=1 - 2",
      "bytes=0x10-20",
      "bytes=١-٢", // non-ASCII digits
      "bytes=5-4",
      "items=0-1",
      "0-1",
      "bytes=0-1,x",
    ]) {
      expect(parseRange(h, 100), h).toMatchObject({ kind: "ignored" });
    }
  });

  it("ignores numbers beyond the safe integer range", () => {
    expect(parseRange("bytes=0-9007199254740991", 100)).toEqual(ranges([0, 99]));
    expect(parseRange("bytes=0-9007199254740992", 100)).toMatchObject({ kind: "ignored" });
    expect(parseRange(`bytes=${"9".repeat(400)}-`, 100)).toMatchObject({ kind: "ignored" });
    expect(parseRange("bytes=-99999999999999999999", 100)).toMatchObject({ kind: "ignored" });
  });

  it("ignores more ranges than allowed, with a reason", () => {
    const many = "bytes=" + Array.from({ length: 101 }, (_, i) => `${i * 2}-${i * 2}`).join(",");
    const result = parseRange(many, 1000);
    expect(result.kind).toBe("ignored");
    expect(result.kind === "ignored" && result.reason).toMatch(/100/);
    expect(parseRange("bytes=0-0,2-2,4-4", 10, 3)).toEqual(ranges([0, 0], [2, 2], [4, 4]));
    expect(parseRange("bytes=0-0,2-2,4-4", 10, 2)).toMatchObject({ kind: "ignored" });
  });

  it("rejects a nonsensical representation size", () => {
    expect(() => parseRange("bytes=0-1", -1)).toThrow(RangeError);
    expect(() => parseRange("bytes=0-1", 1.5)).toThrow(RangeError);
  });
});

describe("ifRangeAllows", () => {
  const etag = '"sha256:abc"';

  it("allows the range when there is no If-Range", () => {
    expect(ifRangeAllows(null, etag)).toBe(true);
    expect(ifRangeAllows(undefined, etag)).toBe(true);
  });

  it("allows the range only for a strongly matching entity tag", () => {
    expect(ifRangeAllows('"sha256:abc"', etag)).toBe(true);
    expect(ifRangeAllows(' "sha256:abc" ', etag)).toBe(true);
    expect(ifRangeAllows('"sha256:abd"', etag)).toBe(false);
    expect(ifRangeAllows('"sha256:abc"', "sha256:abc")).toBe(true); // bare ETag value
  });

  it("never matches weak tags, dates or malformed values", () => {
    expect(ifRangeAllows('W/"sha256:abc"', etag)).toBe(false);
    expect(ifRangeAllows('"sha256:abc"', 'W/"sha256:abc"')).toBe(false);
    expect(ifRangeAllows('W/"sha256:abc"', 'W/"sha256:abc"')).toBe(false);
    expect(ifRangeAllows("Wed, 21 Oct 2015 07:28:00 GMT", etag)).toBe(false);
    expect(ifRangeAllows("sha256:abc", etag)).toBe(false);
    expect(ifRangeAllows("", etag)).toBe(false);
  });
});

describe("Content-Range values", () => {
  it("formats satisfied and unsatisfied ranges", () => {
    expect(contentRange({ start: 0, end: 9 }, 100)).toBe("bytes 0-9/100");
    expect(contentRange({ start: 99, end: 99 }, 100)).toBe("bytes 99-99/100");
    expect(unsatisfiedRange(100)).toBe("bytes */100");
  });
});

// --- multipart/byteranges -------------------------------------------------------------------

const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7 + 3) % 256);

/** Serves a range as a stream of small chunks, recording which ranges were opened. */
function reader(chunk = 7, opened: ByteRange[] = []) {
  return async (r: ByteRange): Promise<ReadableStream<Uint8Array>> => {
    opened.push(r);
    let at = r.start;
    return new ReadableStream<Uint8Array>({
      pull(controller) {
        if (at > r.end) return controller.close();
        const end = Math.min(at + chunk, r.end + 1);
        controller.enqueue(data.slice(at, end));
        at = end;
      },
    });
  };
}

const collect = (body: ReadableStream<Uint8Array>): Promise<Uint8Array> => readAll(body);

const latin1 = (bytes: Uint8Array) => Array.from(bytes, (b) => String.fromCharCode(b)).join("");

/** A strict multipart/byteranges parser following RFC 2046 framing. */
function parseMultipart(body: Uint8Array, contentType: string) {
  const m = /^multipart\/byteranges; boundary=(?:"([^"]+)"|([^;\s]+))$/.exec(contentType);
  if (!m) throw new Error(`bad content type ${contentType}`);
  const boundary = m[1] ?? m[2]!;
  const text = latin1(body); // byte-preserving view of the body
  const closing = `--${boundary}--\r\n`;
  expect(text.endsWith(closing)).toBe(true);
  const sections = text.slice(0, -closing.length).split(`--${boundary}\r\n`);
  expect(sections.shift()).toBe(""); // no preamble
  return sections.map((section) => {
    const headEnd = section.indexOf("\r\n\r\n");
    const headers = Object.fromEntries(
      section
        .slice(0, headEnd)
        .split("\r\n")
        .map((line) => {
          const colon = line.indexOf(":");
          return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
        }),
    );
    expect(section.endsWith("\r\n")).toBe(true);
    const payload = section.slice(headEnd + 4, -2);
    return { headers, bytes: Uint8Array.from(payload, (c) => c.charCodeAt(0)) };
  });
}

describe("multipartByteranges", () => {
  it("produces parts with the right headers and bytes, and exactly the announced length", async () => {
    const rs: ByteRange[] = [
      { start: 500, end: 599 },
      { start: 0, end: 0 },
      { start: 990, end: 999 },
    ];
    const out = multipartByteranges(rs, data.length, "application/octet-stream", reader());
    const body = await collect(out.body);
    expect(body.byteLength).toBe(out.length);
    const parts = parseMultipart(body, out.contentType);
    expect(parts).toHaveLength(3);
    rs.forEach((r, i) => {
      expect(parts[i]!.headers).toEqual({
        "content-type": "application/octet-stream",
        "content-range": `bytes ${r.start}-${r.end}/1000`,
      });
      expect(parts[i]!.bytes).toEqual(data.slice(r.start, r.end + 1));
    });
  });

  it("uses the given boundary and matches the RFC 9110 layout byte for byte", async () => {
    const out = multipartByteranges(
      [
        { start: 0, end: 1 },
        { start: 4, end: 4 },
      ],
      10,
      "text/plain",
      async (r) => new Response("abcdefghij".slice(r.start, r.end + 1)).body!,
      "SEP",
    );
    const expected =
      "--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\nab\r\n" +
      "--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 4-4/10\r\n\r\ne\r\n" +
      "--SEP--\r\n";
    expect(out.contentType).toBe("multipart/byteranges; boundary=SEP");
    expect(out.length).toBe(expected.length);
    expect(new TextDecoder().decode(await collect(out.body))).toBe(expected);
  });

  it("generates a fresh random hex boundary by default and quotes one that needs it", () => {
    const rs = [{ start: 0, end: 0 }];
    const a = multipartByteranges(rs, 1, "x/y", reader());
    const b = multipartByteranges(rs, 1, "x/y", reader());
    expect(a.contentType).toMatch(/^multipart\/byteranges; boundary=[0-9a-f]{32}$/);
    expect(a.contentType).not.toBe(b.contentType);
    expect(multipartByteranges(rs, 1, "x/y", reader(), "a:b").contentType).toBe(
      'multipart/byteranges; boundary="a:b"',
    );
  });

  it("opens parts lazily, one after another", async () => {
    const opened: ByteRange[] = [];
    const rs = [
      { start: 0, end: 99 },
      { start: 200, end: 299 },
    ];
    const out = multipartByteranges(rs, data.length, "x/y", reader(10, opened));
    await Promise.resolve();
    expect(opened).toEqual([]);
    const r = out.body.getReader();
    await r.read(); // first part's headers
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(opened).toEqual([]);
    await r.read(); // first data chunk
    await r.read();
    expect(opened).toEqual([rs[0]]);
    await r.cancel();
  });

  it("errors the body when readRange rejects", async () => {
    const out = multipartByteranges([{ start: 0, end: 9 }], 10, "x/y", async () => {
      throw new Error("upstream gone");
    });
    await expect(collect(out.body)).rejects.toThrow("upstream gone");
  });

  it("errors the body when a part stream errors", async () => {
    const out = multipartByteranges([{ start: 0, end: 99 }], 100, "x/y", async () => {
      let sent = false;
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent) return controller.error(new Error("connection reset"));
          sent = true;
          controller.enqueue(new Uint8Array(10));
        },
      });
    });
    await expect(collect(out.body)).rejects.toThrow("connection reset");
  });

  it("errors the body when a part is shorter or longer than its range", async () => {
    const short = multipartByteranges([{ start: 0, end: 9 }], 10, "x/y", async () => new Response("abc").body!);
    await expect(collect(short.body)).rejects.toThrow(/early/);
    const long = multipartByteranges([{ start: 0, end: 1 }], 10, "x/y", async () => new Response("abc").body!);
    await expect(collect(long.body)).rejects.toThrow(/longer/);
  });

  it("rejects ranges that do not fit and bad boundaries", () => {
    const read = reader();
    expect(() => multipartByteranges([], 10, "x/y", read)).toThrow(RangeError);
    expect(() => multipartByteranges([{ start: 5, end: 10 }], 10, "x/y", read)).toThrow(RangeError);
    expect(() => multipartByteranges([{ start: 5, end: 4 }], 10, "x/y", read)).toThrow(RangeError);
    expect(() => multipartByteranges([{ start: 0, end: 1 }], 10, "x/y", read, "")).toThrow(RangeError);
    expect(() => multipartByteranges([{ start: 0, end: 1 }], 10, "x/y", read, "a\r\nb")).toThrow(RangeError);
    expect(() => multipartByteranges([{ start: 0, end: 1 }], 10, "x/y", read, "x".repeat(71))).toThrow(RangeError);
  });
});
