// Learned prefetch against a real Distribution registry and skiff on Node: a node's report of the
// chunks its container read first is merged and served back in the prefetch list format; digests
// that are not chunks of the image are dropped; another repository holding the same image sees
// nothing; oversized bodies are refused while they arrive; the list survives a restart over the same
// store; with the setting off the route is not there. The node side's client (src/client) is used
// for the happy path, raw HTTP for the rest.
import { request as httpRequest } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { fetchLearnedReads, reportReads } from "../../src/client/lazy-api.ts";
import { MAX_REPORT_BYTES, PREFETCH_LIST_HEADER } from "../../src/format/prefetch-list.ts";
import { buildImage, OciLayout, pushImage, type ImageInfo } from "./harness/images.ts";
import { convertedImage } from "./harness/learned.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

let registry: Registry;
let image: ImageInfo;
let dataDir: string;
let skiff: Skiff;
/** The image bootstrap's chunk digests (hex) and what names the conversion. */
let chunks: string[];
let params: string;
let manifest: string;

const FOREIGN = "f".repeat(64);
const list = (digests: string[]) => `${PREFETCH_LIST_HEADER}\n${digests.map((d) => `${d}\n`).join("")}`;
const readsUrl = (s: Skiff, repo: string, p = params) => `${s.url}/v2/${repo}/_skiff/images/${manifest}/${p}/reads`;

async function post(url: string, body: string | Uint8Array<ArrayBuffer>): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: "POST", body, headers: { "Content-Type": "text/plain" }, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, text: await res.text() };
}

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

const errorCode = (text: string) => (JSON.parse(text) as { errors: { code: string }[] }).errors[0]!.code;

beforeAll(async () => {
  registry = await Registry.start({ name: "learned-registry" });
  const layout = new OciLayout(tempDir("learned-layout"));
  image = buildImage(layout, { tag: "v1", seed: "learned", layers: 2, filesPerLayer: 3, fileSize: 200 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/other:v1`); // the same image in another repository
  dataDir = join(tempDir("learned-skiff"), "data");
  skiff = await Skiff.start({ upstream: registry.url, dataDir });
  ({ chunks, manifest, params } = await convertedImage(skiff.url, "e2e/app", "v1?chunk-size=64k"));
  expect(manifest).toBe(image.manifest.digest);
  expect(chunks.length).toBeGreaterThanOrEqual(8);
}, 120_000);

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

describe("learned prefetch on Node skiff", () => {
  test("nothing learned yet: GET is 404 with an OCI error", async () => {
    const r = await get(readsUrl(skiff, "e2e/app"));
    expect(r.status).toBe(404);
    expect(errorCode(r.text)).toBe("MANIFEST_UNKNOWN");
    expect(await fetchLearnedReads(skiff.url, "e2e/app", manifest, params)).toBeNull();
  });

  test("a report is merged and served back; a foreign digest is dropped and counted; ETag revalidates", async () => {
    const dropped = await skiff.metric("skiff_learned_reads_dropped_total");
    const first = [chunks[5]!, chunks[2]!, FOREIGN, chunks[7]!];
    const r = await post(readsUrl(skiff, "e2e/app"), list(first));
    expect(r.status, r.text).toBe(204);
    expect(await skiff.metric("skiff_learned_reads_dropped_total")).toBe(dropped + 1);

    const got = await get(readsUrl(skiff, "e2e/app"));
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(got.headers.get("cache-control")).toMatch(/no-cache/);
    expect(got.text).toBe(list([chunks[5]!, chunks[2]!, chunks[7]!]));
    const etag = got.headers.get("etag")!;
    expect(etag).toMatch(/^"sha256:[0-9a-f]{64}"$/);
    expect((await get(readsUrl(skiff, "e2e/app"), { "If-None-Match": etag })).status).toBe(304);

    // The node side's client: a second report, merged with the first (chunk 2 is early in both).
    await reportReads(skiff.url, "e2e/app", manifest, params, [chunks[2]!, chunks[0]!, chunks[5]!]);
    expect(await fetchLearnedReads(skiff.url, "e2e/app", manifest, params)).toEqual([chunks[2]!, chunks[5]!, chunks[0]!, chunks[7]!]);
    expect((await get(readsUrl(skiff, "e2e/app"), { "If-None-Match": etag })).status).toBe(200);
  });

  test("another repository holding the same image digest sees no list, and its own report stays its own", async () => {
    expect((await get(readsUrl(skiff, "e2e/other"))).status).toBe(404);
    expect((await post(readsUrl(skiff, "e2e/other"), list([chunks[1]!]))).status).toBe(204);
    expect(await fetchLearnedReads(skiff.url, "e2e/other", manifest, params)).toEqual([chunks[1]!]);
    expect(await fetchLearnedReads(skiff.url, "e2e/app", manifest, params)).not.toContain(chunks[1]!);
  });

  test("refusals: not a list or only foreign digests (400), an image unknown to the repository or not converted with the params (404)", async () => {
    const bad = await post(readsUrl(skiff, "e2e/app"), `${chunks[0]}\n`);
    expect(bad.status).toBe(400);
    expect(errorCode(bad.text)).toBe("UNSUPPORTED");
    const foreign = await post(readsUrl(skiff, "e2e/app"), list([FOREIGN, "e".repeat(64)]));
    expect(foreign.status).toBe(400);
    expect(errorCode(foreign.text)).toBe("DIGEST_INVALID");
    const unknown = await post(`${skiff.url}/v2/e2e/app/_skiff/images/sha256:${"0".repeat(64)}/${params}/reads`, list([chunks[0]!]));
    expect(unknown.status).toBe(404);
    const otherParams = await post(readsUrl(skiff, "e2e/app", "v1-c20-none"), list([chunks[0]!]));
    expect(otherParams.status).toBe(404);
    expect(errorCode(otherParams.text)).toBe("MANIFEST_UNKNOWN");
    expect((await post(readsUrl(skiff, "e2e/app", "v9-nonsense"), list([chunks[0]!]))).status).toBe(404);
    // POST on the other lazy routes is still refused.
    expect((await post(`${skiff.url}/v2/e2e/app/_skiff/bootstrap/v1`, "x")).status).toBe(405);
  });

  test("a body over 4 MiB is refused with 413: announced, and sent chunked without a length", async () => {
    const big = new Uint8Array(MAX_REPORT_BYTES + 1).fill(0x61);
    big.set(new TextEncoder().encode(`${PREFETCH_LIST_HEADER}\n`));
    const announced = await post(readsUrl(skiff, "e2e/app"), big);
    expect(announced.status).toBe(413);
    expect(errorCode(announced.text)).toBe("SIZE_INVALID");
    // Chunked: the limit holds while reading, however much more the client would send.
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(readsUrl(skiff, "e2e/app"), { method: "POST", headers: { "Content-Type": "text/plain" } }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      const piece = Buffer.alloc(256 * 1024, "a");
      let sent = 0;
      const pump = () => {
        // Up to 64 MiB; the answer comes long before.
        while (sent < 64 * 2 ** 20 && !req.destroyed) {
          sent += piece.length;
          if (!req.write(piece)) return void req.once("drain", pump);
        }
        req.end();
      };
      req.write(`${PREFETCH_LIST_HEADER}\n`);
      pump();
    });
    expect(chunked.status).toBe(413);
    expect(errorCode(chunked.body)).toBe("SIZE_INVALID");
    // The list is untouched.
    expect((await fetchLearnedReads(skiff.url, "e2e/app", manifest, params))?.[0]).toBe(chunks[2]);
  }, 60_000);

  test("the list survives a restart over the same store; with --no-learned-prefetch the route is 404", async () => {
    const before = await fetchLearnedReads(skiff.url, "e2e/app", manifest, params);
    await skiff.stop();
    skiff = await Skiff.start({ upstream: registry.url, dataDir });
    expect(await fetchLearnedReads(skiff.url, "e2e/app", manifest, params)).toEqual(before);

    const off = await Skiff.start({ upstream: registry.url, dataDir, extraArgs: ["--no-learned-prefetch"] });
    try {
      const r = await get(readsUrl(off, "e2e/app"));
      expect(r.status).toBe(404);
      expect(errorCode(r.text)).toBe("NAME_UNKNOWN");
      expect((await post(readsUrl(off, "e2e/app"), list([chunks[0]!]))).status).toBe(404);
      // The rest of the lazy API is unaffected.
      expect((await fetch(`${off.url}/v2/e2e/app/_skiff/bootstrap/${manifest}?chunk-size=64k`)).status).toBe(200);
    } finally {
      await off.stop();
    }
  }, 60_000);
});
