// The Range probe (src/ranges/check.ts) against the range fault server: clean with no fault, and each
// fault caught by exactly the cases it breaks; behaviours the server cannot be told to show (a
// refused HEAD, an ignored If-Range, no ETag, coalesced ranges) come from a fetch that rewrites
// requests or responses on the way. The CLI runs as a child process in test/e2e/check-ranges.test.ts.
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { CheckError, checkRanges, type RangeReport } from "../../src/ranges/check.ts";
import { parseByteranges } from "../../src/ranges/multipart.ts";
import { memoryStore } from "../../src/ranges/store.ts";
import { startRangeFaultServer, type RangeFault, type RangeFaultServer } from "../e2e/harness/range-fault-server.ts";

const BODY = randomBytes(100_000);
// broken-multipart shifts a part by one byte, so its first byte must differ from the one after it
// for the named failure to be at that byte (random bytes left it the same once in 256 runs).
BODY[21] = BODY[20]! ^ 0xff;
const DIGEST = `sha256:${createHash("sha256").update(BODY).digest("hex")}`;
let server: RangeFaultServer;

beforeAll(async () => {
  server = await startRangeFaultServer({ body: BODY, path: `/v2/e2e/blobs/${DIGEST}` });
});
afterAll(() => server?.close());
beforeEach(() => server.setFault("none"));

const failed = (r: RangeReport) => r.cases.filter((c) => c.result === "FAIL").map((c) => c.name);
const warned = (r: RangeReport) => r.cases.filter((c) => c.result === "WARN").map((c) => c.name);
const detail = (r: RangeReport, name: string) => r.cases.find((c) => c.name === name)?.detail ?? `(no case ${name})`;

/** A fetch that lets a test edit each request's headers and each response. */
function rewriting(o: { request?: (h: Headers, method: string) => void; response?: (r: Response, method: string) => Response }): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const headers = new Headers(init?.headers);
    const method = init?.method ?? "GET";
    o.request?.(headers, method);
    const res = await fetch(input, { ...init, headers });
    return o.response ? o.response(res, method) : res;
  }) as typeof fetch;
}

test("a correct server passes every case, and the URL's digest is checked", async () => {
  const r = await checkRanges(server.url, { fetch });
  expect(failed(r)).toEqual([]);
  expect(warned(r)).toEqual([]);
  expect(r).toMatchObject({ url: server.url, size: BODY.length, digest: DIGEST, ok: true });
  expect(r.cases.map((c) => c.name)).toEqual([
    "head", "accept-ranges", "size", "full-get", "single-range", "open-ended", "suffix", "clamp", "unsatisfiable",
    "unsatisfiable-content-range", "invalid-syntax", "reversed-range", "multi-range", "if-range-match", "if-range-stale",
  ]);
  expect(detail(r, "full-get")).toContain("sha256 matches");
  expect(detail(r, "multi-range")).toContain("multipart/byteranges, 2 parts");
  expect(r.cases.find((c) => c.name === "if-range-stale")?.kind, "the server sends a strong ETag").toBe("mandatory");
});

// Every ranged answer passes through the same checks, so a fault shows in every case that gets a 206.
const EVERY_206 = ["single-range", "open-ended", "suffix", "clamp", "multi-range", "if-range-match"];
const FAULTS: [RangeFault, string[], RegExp][] = [
  ["full-body", ["single-range", "open-ended", "clamp", "unsatisfiable"], /^200 where 206 was due/],
  ["wrong-content-range", EVERY_206, /^wrong Content-Range "bytes 33334-37429\/100000"/],
  ["short-body", EVERY_206, /^short body: 4095 of 4096 bytes/],
  ["long-body", EVERY_206, /^long body: more than 4096 bytes/],
  ["no-clamp", ["clamp"], /./],
  ["broken-multipart", ["multi-range"], /./],
  ["corrupt-body", EVERY_206, /^body differs from the full GET at byte 35381/],
];

describe.each(FAULTS)("fault %s", (fault, cases, singleRangeDetail) => {
  test(`fails exactly ${cases.join(", ")}`, async () => {
    server.setFault(fault);
    const r = await checkRanges(server.url, { fetch });
    expect(r.ok).toBe(false);
    expect(failed(r)).toEqual(cases);
    if (cases.includes("single-range")) expect(detail(r, "single-range")).toMatch(singleRangeDetail);
  });
});

test("named failures for no-clamp and broken-multipart", async () => {
  server.setFault("no-clamp");
  expect(detail(await checkRanges(server.url, { fetch }), "clamp")).toBe("416 for a satisfiable range (want 206 bytes 99990-99999/100000)");
  server.setFault("broken-multipart");
  expect(detail(await checkRanges(server.url, { fetch }), "multi-range")).toBe('part "bytes 21-30/100000": byte 21 differs from the full GET');
});

test("a body that does not match the URL's digest fails full-get", async () => {
  const other = `sha256:${"0".repeat(64)}`;
  const r = await checkRanges(server.url, { fetch, digest: other });
  expect(failed(r)).toEqual(["full-get"]);
  expect(detail(r, "full-get")).toBe(`digest mismatch: body is ${DIGEST}, URL says ${other}`);
});

test("a server that ignores If-Range and sends a strong ETag fails if-range-stale", async () => {
  const r = await checkRanges(server.url, { fetch: rewriting({ request: (h) => h.delete("if-range") }) });
  expect(failed(r)).toEqual(["if-range-stale"]);
  expect(detail(r, "if-range-stale")).toMatch(/^206 for a stale If-Range "skiff-check-ranges-stale"/);
});

test("without an ETag, If-Range uses Last-Modified and an ignored stale date only warns", async () => {
  const noEtag = (res: Response) => {
    const headers = new Headers(res.headers);
    headers.delete("etag");
    return new Response(res.body, { status: res.status, headers });
  };
  const seen: string[] = [];
  const r = await checkRanges(server.url, {
    fetch: rewriting({
      request: (h) => {
        if (h.has("if-range")) seen.push(h.get("if-range")!);
        h.delete("if-range");
      },
      response: noEtag,
    }),
  });
  expect(seen).toEqual(["Mon, 01 Jan 2024 00:00:00 GMT", "Sun, 31 Dec 2023 00:00:00 GMT"]);
  expect(failed(r)).toEqual([]);
  expect(r.cases.find((c) => c.name === "if-range-stale")).toMatchObject({ kind: "advisory", result: "WARN" });
});

test("a refused HEAD warns, and the size comes from a bytes=0-0 Content-Range", async () => {
  const r = await checkRanges(server.url, {
    fetch: rewriting({ response: (res, method) => (method === "HEAD" ? new Response(null, { status: 403 }) : res) }),
  });
  expect(failed(r)).toEqual([]);
  expect(warned(r)).toEqual(["head"]);
  expect(detail(r, "size")).toBe("100000 bytes, from Content-Range of bytes=0-0 (100000)");
});

test("a HEAD length that disagrees with the body fails size", async () => {
  const r = await checkRanges(server.url, {
    fetch: rewriting({
      response: (res, method) => (method === "HEAD" ? new Response(null, { status: 200, headers: { "content-length": "99999" } }) : res),
    }),
  });
  expect(failed(r)).toEqual(["size"]);
  expect(detail(r, "size")).toBe("HEAD Content-Length 99999, but the full GET has 100000 bytes");
});

test("coalescing two ranges into one covering 206 passes multi-range", async () => {
  const r = await checkRanges(server.url, {
    fetch: rewriting({ request: (h) => void (h.get("range") === "bytes=0-9,20-29" && h.set("range", "bytes=0-29")) }),
  });
  expect(failed(r)).toEqual([]);
  expect(detail(r, "multi-range")).toBe("206 coalesced into one part, bytes 0-29/100000");
});

test("a 200 to multiple ranges warns; invalid ranges answered 416 warn", async () => {
  const r = await checkRanges(server.url, {
    fetch: rewriting({
      request: (h) => {
        const range = h.get("range") ?? "";
        if (range.includes(",")) h.delete("range");
        if (range === "bytes=abc" || range === "bytes=5-2") h.set("range", "bytes=200000-200001"); // unsatisfiable: 416
      },
    }),
  });
  expect(failed(r)).toEqual([]);
  expect(warned(r)).toEqual(["invalid-syntax", "reversed-range", "multi-range"]);
});

test("Accept-Encoding is identity on every request, and extra headers are sent", async () => {
  const sent: [string | null, string | null][] = [];
  await checkRanges(server.url, {
    fetch: rewriting({ request: (h) => void sent.push([h.get("accept-encoding"), h.get("authorization")]) }),
    headers: [["Authorization", "Bearer t0ken"], ["Accept-Encoding", "gzip"]],
  });
  expect(sent.length).toBeGreaterThan(10);
  expect(new Set(sent.map((s) => s.join(" ")))).toEqual(new Set(["identity Bearer t0ken"]));
});

test("an unreachable URL and a GET that answers 404 are errors, not reports", async () => {
  const refused: typeof fetch = async () => {
    throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:9") });
  };
  await expect(checkRanges("http://127.0.0.1:9/blob", { fetch: refused })).rejects.toThrow(
    new CheckError("cannot reach http://127.0.0.1:9/blob: fetch failed: connect ECONNREFUSED 127.0.0.1:9"),
  );
  const missing = server.url.replace(/\/blobs\/.*/, "/blobs/other");
  await expect(checkRanges(missing, { fetch })).rejects.toThrow(`GET ${missing} answered 404 Not Found`);
});

test("a blob past the in-memory limit is an error, not a report", async () => {
  await expect(checkRanges(server.url, { fetch, openStore: async (n) => memoryStore(n, 1000) })).rejects.toThrow(
    new CheckError("blob larger than the 1000-byte in-memory limit"),
  );
});

test("an empty blob: no range case applies", async () => {
  const empty = await startRangeFaultServer({ body: new Uint8Array(0) });
  try {
    const r = await checkRanges(empty.url, { fetch });
    expect(r).toMatchObject({ size: 0, ok: true });
    expect(warned(r)).toEqual(["ranges"]);
  } finally {
    await empty.close();
  }
});

describe("multipart/byteranges parser", () => {
  const part = (cr: string, data: string) => `--B\r\nContent-Range: ${cr}\r\n\r\n${data}\r\n`;
  const parse = (s: string) => parseByteranges(new TextEncoder().encode(s), "B");

  test("parts with their ranges and bytes", () => {
    const parts = parse(`${part("bytes 0-2/9", "abc")}${part("bytes 5-6/9", "fg")}--B--\r\n`);
    expect(parts.map((p) => [p.start, p.end, p.size, new TextDecoder().decode(p.data)])).toEqual([[0, 2, 9, "abc"], [5, 6, 9, "fg"]]);
  });
  test("a missing final boundary, a wrong length and a missing Content-Range are named", () => {
    expect(() => parse(part("bytes 0-2/9", "abc"))).toThrow("body ends without the final boundary");
    expect(() => parse(`${part("bytes 0-2/9", "abcd")}--B--`)).toThrow('part "bytes 0-2/9": no boundary right after its bytes (wrong length)');
    expect(() => parse("--B\r\nContent-Type: x\r\n\r\nabc\r\n--B--")).toThrow("part 1: no valid Content-Range");
  });
});
