// The lazy API client against a stubbed fetch: URLs, error messages, what is retried and what is not.
// node-agent/test/bootstrap-client.test.ts covers 202s, the digest check and size caps over real HTTP.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  bootstrapUrl,
  chunkUrl,
  fetchBootstrap,
  fetchLayerBootstrap,
  fetchLearnedReads,
  layerBootstrapUrl,
  layerDataUrl,
  LazyApiError,
  learnedReadsUrl,
  reportReads,
  type FetchLike,
} from "../../src/client/lazy-api.ts";
import { MAX_REPORT_BYTES, parsePrefetchList, PREFETCH_LIST_HEADER } from "../../src/format/prefetch-list.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir } from "../../src/format/model.ts";

const BODY = encodeBootstrap({ kind: "image", codec: 0, chunkShift: 16, platform: "linux/amd64", blobs: [], chunks: [], root: newDir() });
const HEADERS = {
  "docker-content-digest": `sha256:${createHash("sha256").update(BODY).digest("hex")}`,
  "skiff-manifest-digest": `sha256:${"ab".repeat(32)}`,
  "skiff-params": "v1-c16-none",
};
const ok = (headers: Record<string, string> = {}) => new Response(new Uint8Array(BODY), { headers: { ...HEADERS, ...headers } });
const LAYER = `sha256:${"12".repeat(32)}`;

/** Answers the requests in turn (a thrown Error is a network error), recording the URLs. */
function stub(...answers: (() => Response)[]): FetchLike & { urls: string[] } {
  const urls: string[] = [];
  const f = async (url: string) => {
    urls.push(url);
    return (answers.length > 1 ? answers.shift()! : answers[0]!)();
  };
  return Object.assign(f, { urls });
}
const refused = () => {
  throw new TypeError("fetch failed", { cause: new Error("connect ECONNREFUSED 127.0.0.1:1") });
};
const rejection = (p: Promise<unknown>) => p.then(() => expect.unreachable(), (err: unknown) => err as LazyApiError);

describe("URLs", () => {
  it("bootstrap, layer data and chunk routes", () => {
    expect(bootstrapUrl("http://p:5000/", "lib/app", "v1", { platform: "linux/arm64", chunkSize: "64k", codec: "deflate-raw" })).toBe(
      "http://p:5000/v2/lib/app/_skiff/bootstrap/v1?platform=linux%2Farm64&chunk-size=64k&codec=deflate-raw",
    );
    expect(bootstrapUrl("http://p", "app", `@${LAYER}`)).toBe(`http://p/v2/app/_skiff/bootstrap/${LAYER}`);
    expect(layerDataUrl("http://p/", "app", LAYER, "v1-c16-none")).toBe(`http://p/v2/app/_skiff/layers/${LAYER}/v1-c16-none/data`);
    expect(chunkUrl("http://p", "app", LAYER, "v1-c16-deflate-raw", "ff".repeat(32), "none")).toBe(`http://p/v2/app/_skiff/layers/${LAYER}/v1-c16-deflate-raw/chunks/${"ff".repeat(32)}.none`);
  });
});

describe("fetchBootstrap", () => {
  it("returns the checked bootstrap with its digests and parameters", async () => {
    const got = await fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, fetchImpl: stub(() => ok()) });
    expect(got).toMatchObject({ digest: HEADERS["docker-content-digest"], manifestDigest: HEADERS["skiff-manifest-digest"], params: "v1-c16-none" });
    expect(got.bootstrap.chunkShift).toBe(16);
  });

  it("an OCI error body is `CODE: message` on one line; another error is the status", async () => {
    const oci = () => Response.json({ errors: [{ code: "MANIFEST_UNKNOWN", message: "no such\ntag" }] }, { status: 404 });
    const err = await rejection(fetchBootstrap("http://p", "app", "nope", { timeoutMs: 5_000, fetchImpl: stub(oci) }));
    expect(err).toBeInstanceOf(LazyApiError);
    expect(err.message).toBe("MANIFEST_UNKNOWN: no such tag");
    const html = () => new Response("<html>\nbad gateway</html>", { status: 502, statusText: "Bad Gateway" });
    expect((await rejection(fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, fetchImpl: stub(html) }))).message).toBe(
      "GET http://p/v2/app/_skiff/bootstrap/v1: HTTP 502 Bad Gateway",
    );
  });

  it("network errors and 5xx fail at once, or are retried until the timeout with retryFailures", async () => {
    const once = stub(refused);
    const err = await rejection(fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, fetchImpl: once }));
    expect(err.message).toBe("GET http://p/v2/app/_skiff/bootstrap/v1: fetch failed: connect ECONNREFUSED 127.0.0.1:1");
    expect(once.urls).toHaveLength(1);

    const flaky = stub(refused, () => new Response("", { status: 503 }), () => ok());
    await fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, retryFailures: true, fetchImpl: flaky });
    expect(flaky.urls).toHaveLength(3);

    const down = stub(refused);
    const timedOut = await rejection(fetchBootstrap("http://p", "app", "v1", { timeoutMs: 500, retryFailures: true, fetchImpl: down }));
    expect(timedOut.timedOut).toBe(true);
    expect(timedOut.message).toMatch(/: no bootstrap within 500 ms \(last: fetch failed: connect ECONNREFUSED 127\.0\.0\.1:1\)$/);
    expect(down.urls.length).toBeGreaterThan(1);
  });

  it("waits out Retry-After, reporting the wait", async () => {
    const seconds: number[] = [];
    const converting = () => new Response('{"status":"converting"}', { status: 202, headers: { "retry-after": "1" } });
    const started = Date.now();
    await fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, onWait: (s) => seconds.push(s), fetchImpl: stub(converting, () => ok()) });
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(seconds).toEqual([0]);
  });

  it("refuses headers that do not describe the body", async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ "docker-content-digest": "sha512:00" }, /missing or malformed Docker-Content-Digest/],
      [{ "skiff-manifest-digest": "" }, /missing or malformed Skiff-Manifest-Digest/],
      [{ "skiff-params": "v9-c16-none" }, /unknown Skiff-Params "v9-c16-none"/],
      [{ "skiff-params": "v1-c20-none" }, /bootstrap parameters do not match Skiff-Params v1-c20-none/],
    ];
    for (const [headers, message] of cases) {
      const err = await rejection(fetchBootstrap("http://p", "app", "v1", { timeoutMs: 5_000, fetchImpl: stub(() => ok(headers)) }));
      expect(err.message).toMatch(message);
    }
  });
});

describe("fetchLayerBootstrap", () => {
  const dataDigest = new Uint8Array(32).fill(7);
  const layerBody = encodeBootstrap({ kind: "layer", codec: 0, chunkShift: 16, platform: "", blobs: [{ dataDigest, storedSize: 0, layerDigest: LAYER }], chunks: [], root: newDir() });
  const answer = (body: Uint8Array) => () =>
    new Response(new Uint8Array(body), { headers: { "docker-content-digest": `sha256:${createHash("sha256").update(body).digest("hex")}`, "skiff-params": "v1-c16-none" } });
  const options = (fetchImpl: FetchLike) => ({ dataDigest: "07".repeat(32), timeoutMs: 5_000, fetchImpl, ns: "registry.example:5000" });

  it("asks the layer's bootstrap route with ?ns= and accepts the conversion the image names", async () => {
    const f = stub(answer(layerBody));
    const b = await fetchLayerBootstrap("http://p", "app", LAYER, "v1-c16-none", options(f));
    expect(b.kind).toBe("layer");
    expect(f.urls).toEqual([`http://p/v2/app/_skiff/layers/${LAYER}/v1-c16-none/bootstrap?ns=registry.example%3A5000`]);
    expect(layerBootstrapUrl("http://p", "app", LAYER, "v1-c16-none")).toBe(`http://p/v2/app/_skiff/layers/${LAYER}/v1-c16-none/bootstrap`);
  });

  it("refuses another conversion of the layer, another layer, an image bootstrap, other params and a bad digest", async () => {
    const other = `sha256:${"34".repeat(32)}`;
    expect((await rejection(fetchLayerBootstrap("http://p", "app", LAYER, "v1-c16-none", { ...options(stub(answer(layerBody))), dataDigest: "08".repeat(32) }))).message).toMatch(/not of the conversion/);
    expect((await rejection(fetchLayerBootstrap("http://p", "app", other, "v1-c16-none", options(stub(answer(layerBody)))))).message).toMatch(/is of layer/);
    expect((await rejection(fetchLayerBootstrap("http://p", "app", LAYER, "v1-c16-none", options(stub(answer(BODY)))))).message).toMatch(/expected one layer/);
    expect((await rejection(fetchLayerBootstrap("http://p", "app", LAYER, "v1-c20-none", options(stub(answer(layerBody)))))).message).toMatch(/do not match/);
    const forged = () => new Response(new Uint8Array(layerBody), { headers: { "docker-content-digest": `sha256:${"00".repeat(32)}` } });
    expect((await rejection(fetchLayerBootstrap("http://p", "app", LAYER, "v1-c16-none", options(stub(forged))))).message).toMatch(/does not match Docker-Content-Digest/);
    expect((await rejection(fetchLayerBootstrap("http://p", "app", "../x", "v1-c16-none", options(stub(answer(layerBody)))))).message).toMatch(/invalid layer digest/);
  });
});

describe("learned prefetch", () => {
  const MANIFEST = `sha256:${"ab".repeat(32)}`;
  const d = (c: string) => c.repeat(64);
  const URL = `http://p/v2/lib/app/_skiff/images/${MANIFEST}/v1-c16-none/reads`;

  /** A fetch that records each request's method, URL, headers and body and gives `answer`. */
  function recording(answer: () => Response) {
    const seen: { url: string; method: string; headers: Record<string, string>; body?: string }[] = [];
    const fetchImpl: FetchLike = async (url, init) => {
      seen.push({ url, method: init.method, headers: init.headers, body: init.body });
      return answer();
    };
    return { seen, fetchImpl };
  }

  it("learnedReadsUrl names the image, the params and ?ns=", () => {
    expect(learnedReadsUrl("http://p/", "lib/app", MANIFEST, "v1-c16-none")).toBe(URL);
    expect(learnedReadsUrl("http://p", "lib/app", MANIFEST, "v1-c16-none", "ghcr.io")).toBe(`${URL}?ns=ghcr.io`);
  });

  it("fetchLearnedReads: the list's digests in order; null on 404", async () => {
    const list = `${PREFETCH_LIST_HEADER}\n# merged from 3 reports\n${d("b")}\n${d("a")}\n`;
    const got = recording(() => new Response(list, { headers: { "content-type": "text/plain" } }));
    expect(await fetchLearnedReads("http://p", "lib/app", MANIFEST, "v1-c16-none", { fetchImpl: got.fetchImpl, ns: "x.io" })).toEqual([d("b"), d("a")]);
    expect(got.seen[0]).toMatchObject({ url: `${URL}?ns=x.io`, method: "GET" });
    const none = () => Response.json({ errors: [{ code: "MANIFEST_UNKNOWN", message: "nothing learned" }] }, { status: 404 });
    expect(await fetchLearnedReads("http://p", "lib/app", MANIFEST, "v1-c16-none", { fetchImpl: stub(none) })).toBeNull();
  });

  it("fetchLearnedReads refuses what is not a list, other statuses, a body past its cap, network errors", async () => {
    const call = (answer: () => Response) => rejection(fetchLearnedReads("http://p", "lib/app", MANIFEST, "v1-c16-none", { fetchImpl: stub(answer) }));
    expect((await call(() => new Response(`${d("a")}\n`))).message).toMatch(/not a skiff prefetch list/);
    expect((await call(() => new Response(`${PREFETCH_LIST_HEADER}\n${d("A")}\n`))).message).toMatch(/line 2/);
    expect((await call(() => Response.json({ errors: [{ code: "DENIED", message: "no" }] }, { status: 403 }))).message).toBe("DENIED: no");
    const huge = () => new Response(new Uint8Array(2 * MAX_REPORT_BYTES + 1), { headers: { "content-length": String(2 * MAX_REPORT_BYTES + 1) } });
    expect((await call(huge)).message).toMatch(/larger than the agent accepts/);
    const err = await call(refused);
    expect(err).toBeInstanceOf(LazyApiError);
    expect(err.message).toMatch(/^GET http:\/\/p\/.*ECONNREFUSED|fetch failed/);
  });

  it("reportReads POSTs the list as text/plain and resolves on 204", async () => {
    const got = recording(() => new Response(null, { status: 204 }));
    await reportReads("http://p", "lib/app", MANIFEST, "v1-c16-none", [d("c"), d("1")], { fetchImpl: got.fetchImpl });
    expect(got.seen).toHaveLength(1);
    expect(got.seen[0]).toMatchObject({ url: URL, method: "POST" });
    expect(got.seen[0]!.headers["content-type"]).toMatch(/^text\/plain/);
    expect(got.seen[0]!.body!.split("\n")[0]).toBe(PREFETCH_LIST_HEADER);
    expect(parsePrefetchList(got.seen[0]!.body!)).toEqual([d("c"), d("1")]);
  });

  it("reportReads sends only the first digests that fit the proxy's 4 MiB", async () => {
    const got = recording(() => new Response(null, { status: 204 }));
    const many = Array.from({ length: 70_000 }, (_, i) => i.toString(16).padStart(64, "0"));
    await reportReads("http://p", "lib/app", MANIFEST, "v1-c16-none", many, { fetchImpl: got.fetchImpl });
    const body = got.seen[0]!.body!;
    expect(body.length).toBeLessThanOrEqual(MAX_REPORT_BYTES);
    const sent = parsePrefetchList(body);
    expect(sent.length).toBeGreaterThan(60_000);
    expect(sent).toEqual(many.slice(0, sent.length));
  });

  it("reportReads refuses a malformed digest before sending, and an error answer after", async () => {
    const got = recording(() => new Response(null, { status: 204 }));
    const bad = await rejection(reportReads("http://p", "lib/app", MANIFEST, "v1-c16-none", [d("a"), `sha256:${d("b")}`], { fetchImpl: got.fetchImpl }));
    expect(bad.message).toMatch(/not a lowercase sha256 hex digest/);
    expect(got.seen).toEqual([]);
    const tooLarge = () => Response.json({ errors: [{ code: "SIZE_INVALID", message: "too large" }] }, { status: 413 });
    expect((await rejection(reportReads("http://p", "lib/app", MANIFEST, "v1-c16-none", [d("a")], { fetchImpl: stub(tooLarge) }))).message).toBe("SIZE_INVALID: too large");
    const plain = () => new Response("nope", { status: 500, statusText: "Internal Server Error" });
    expect((await rejection(reportReads("http://p", "lib/app", MANIFEST, "v1-c16-none", [d("a")], { fetchImpl: stub(plain) }))).message).toBe(`POST ${URL}: HTTP 500 Internal Server Error`);
  });
});
