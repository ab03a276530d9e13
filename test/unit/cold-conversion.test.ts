// A cold edge converts a layer while it downloads: one pass over the upstream body verifies the
// digest, stores the blob and converts it. These tests hold the upstream body back before its last
// bytes to see the conversion run ahead of the download, compare everything stored with the two-pass
// path (the blob pulled into the cache first, then converted from the store), check that a digest
// that fails only at the end publishes nothing, and that concurrent requests share one download.
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp, type SkiffApp } from "../../src/http/app.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { blobKey, layerBootstrapKey, layerDataKey } from "../../src/store/keys.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes, type Upload } from "../../src/store/store.ts";
import { Prng, tarArchive } from "../e2e/harness/images.ts";
import { FakeRegistry } from "./fakes.ts";

const K64 = 64 * 1024;
const REPO = "lib/app";
const GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";

/** A memory store that counts reads of every key and bytes written to every upload. */
class WatchedStore extends MemoryStore {
  readonly reads = new Map<string, number>();
  readonly written = new Map<string, number>();
  #quiet = false;
  override async get(key: string, span?: { offset: number; length: number }) {
    if (!this.#quiet) this.reads.set(key, (this.reads.get(key) ?? 0) + 1);
    return super.get(key, span);
  }
  override async put(key: string): Promise<Upload> {
    const upload = await super.put(key);
    return {
      ...upload,
      write: async (chunk) => {
        this.written.set(key, (this.written.get(key) ?? 0) + chunk.byteLength);
        await upload.write(chunk);
      },
    };
  }
  /** Everything a layer leaves behind: the blob, its links, its conversions (key → bytes as hex). */
  async layerState(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    this.#quiet = true;
    for (const key of this.keys().sort()) {
      if (key.startsWith("blobs/") || key.includes("/_blobs/") || key.startsWith("converted/")) out[key] = Buffer.from((await getBytes(this, key))!).toString("hex");
    }
    this.#quiet = false;
    return out;
  }
}

/** Two layers: a big one stored (gzip level 0, so a tampered twin has the same length) and a small one. */
function image(seed: string) {
  const prng = new Prng(seed);
  const shared = prng.bytes(K64);
  const big = (p: Prng) =>
    new Uint8Array(
      gzipSync(tarArchive([{ name: "a", type: "dir" }, { name: "a/big", type: "file", data: p.bytes(20 * K64 + 5) }, { name: "a/dup", type: "file", data: Buffer.concat([shared, shared]) }, { name: "a/text", type: "file", data: Buffer.from("text\n".repeat(30_000)) }]), { level: 0 }),
    );
  const layers = [big(prng), new Uint8Array(gzipSync(tarArchive([{ name: "b", type: "file", data: prng.bytes(3 * K64) }, { name: "c", type: "file", data: shared }])))];
  // Another valid layer of exactly the first one's length: what a tampering upstream might send.
  const twin = big(new Prng(`${seed}-twin`));
  expect(twin.byteLength).toBe(layers[0]!.byteLength);
  const registry = new FakeRegistry();
  const digests = registry.addImage(REPO, "v1", layers);
  return { registry, layers, digests, twin };
}

function proxy(registry: FakeRegistry, store: MemoryStore, noneFirst = false): SkiffApp {
  const config = resolveConfig({ upstreams: { "upstream.test": { url: registry.origin, public: true } }, defaultUpstream: "upstream.test", access: { mode: "open" } }, { env: {} });
  return createApp({ config, store, hasher: nodeHasher, fetchFor: () => registry.fetch, convertWaitSeconds: 30, noneFirst });
}

const bootstrapUrl = (query: string) => `http://skiff.test/v2/${REPO}/_skiff/bootstrap/v1${query}`;
const blobUrl = (digest: string) => `http://skiff.test/v2/${REPO}/blobs/${digest}`;

/** A gate the upstream waits at before sending a blob's last `held` bytes. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** Serves `body` for GETs of blob `digest`, in 8 KiB pieces, holding the last 1000 bytes until `until` resolves. */
function holdBlob(registry: FakeRegistry, digest: string, body: Uint8Array, until: Promise<void>): void {
  registry.override = (req) => {
    if (req.method !== "GET" || !req.url.pathname.endsWith(`/blobs/${digest}`)) return undefined;
    const cut = body.byteLength - 1000;
    let at = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (at >= body.byteLength) return controller.close();
        if (at >= cut) await until;
        const end = at < cut ? Math.min(at + 8192, cut) : body.byteLength;
        controller.enqueue(body.slice(at, end));
        at = end;
      },
    });
    return new Response(stream, { status: 200, headers: { "Content-Length": String(body.byteLength), "Content-Type": "application/octet-stream" } });
  };
}

async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The two-pass path: every layer pulled through the registry API into the cache, then the bootstrap. */
async function twoPass(registry: FakeRegistry, digests: string[], query: string) {
  const store = new WatchedStore();
  const app = proxy(registry, store).app;
  for (const d of digests) {
    const pulled = await app.request(blobUrl(d));
    expect(pulled.status).toBe(200);
    await pulled.arrayBuffer(); // a client that stops reading would hold the download up
  }
  const res = await app.request(bootstrapUrl(query));
  expect(res.status, await res.clone().text()).toBe(200);
  // It really read the layers back from the store.
  for (const d of digests) expect(store.reads.get(blobKey(parseDigest(d)!))).toBeGreaterThan(0);
  return { bootstrap: Buffer.from(await res.arrayBuffer()), state: await store.layerState() };
}

describe("a cold edge converts while it downloads", () => {
  it("cuts chunks before the upstream body ends, publishes nothing until the digest matched, and never reads the blob back", async () => {
    const { registry, layers, digests } = image("cold-overlap");
    const store = new WatchedStore();
    const app = proxy(registry, store).app;
    const held = gate();
    holdBlob(registry, digests[0]!, layers[0]!, held.opened);
    const layer = parseDigest(digests[0]!)!;
    const answer = app.request(bootstrapUrl("?chunk-size=64k"));
    // All but the last 1000 bytes have arrived: the converter has stored most of the layer's chunks already
    // (written in batches of 1 MiB, so the big file is 1.3 MiB).
    await until("chunks of the held layer are written", () => (store.written.get(layerDataKey(layer, "v1-c16-none")) ?? 0) > 9 * K64);
    expect(store.written.get(blobKey(layer))).toBeLessThan(layers[0]!.byteLength);
    expect(await store.stat(layerDataKey(layer, "v1-c16-none"))).toBeNull();
    expect(await store.stat(layerBootstrapKey(layer, "v1-c16-none"))).toBeNull();
    expect(await store.stat(blobKey(layer))).toBeNull();
    held.open();
    const res = await answer;
    expect(res.status, await res.clone().text()).toBe(200);
    for (const d of digests) expect(store.reads.get(blobKey(parseDigest(d)!)) ?? 0).toBe(0);
    for (const d of digests) expect(registry.count(`/blobs/${d}`, "GET")).toBe(1);
  });

  for (const query of ["?chunk-size=64k", "", "?chunk-size=64k&codec=deflate-raw"]) {
    it(`stores exactly what the two-pass path stores: bootstrap, data blobs, blob cache (${query || "defaults"})`, async () => {
      const { registry, digests } = image("cold-same");
      const reference = await twoPass(registry, digests, query);
      const store = new WatchedStore();
      const res = await proxy(registry, store).app.request(bootstrapUrl(query));
      expect(res.status, await res.clone().text()).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(reference.bootstrap)).toBe(true);
      expect(await store.layerState()).toEqual(reference.state);
      for (const d of digests) expect(store.reads.get(blobKey(parseDigest(d)!)) ?? 0).toBe(0);
    });
  }

  it("asks no HEAD for a layer it downloads; a repository that joins the conversion is asked about first, and refused without the layer", async () => {
    const { registry, layers, digests } = image("cold-head");
    // Another image, in another repository, naming the first layer, which its upstream does not have.
    const other = "lib/other";
    registry.addImage(other, "v1", [layers[0]!]);
    registry.removeBlob(other, digests[0]!);
    const app = proxy(registry, new WatchedStore()).app;
    const held = gate();
    holdBlob(registry, digests[0]!, layers[0]!, held.opened);
    const answer = app.request(bootstrapUrl("?chunk-size=64k"));
    await until("the layer's download has begun", () => registry.count(`${REPO}/blobs/${digests[0]}`, "GET") === 1);
    // The first layer is being converted for REPO: the other image would join that conversion.
    const refused = await app.request(`http://skiff.test/v2/${other}/_skiff/bootstrap/v1?chunk-size=64k`);
    expect(refused.status).toBe(404);
    expect(registry.count(`${other}/blobs/${digests[0]}`, "HEAD")).toBe(1);
    expect(registry.count(`${other}/blobs/${digests[0]}`, "GET")).toBe(0);
    held.open();
    const res = await answer;
    expect(res.status, await res.clone().text()).toBe(200);
    for (const d of digests) {
      expect(registry.count(`${REPO}/blobs/${d}`, "HEAD")).toBe(0);
      expect(registry.count(`${REPO}/blobs/${d}`, "GET")).toBe(1);
    }
  });

  it("shows a stored image bootstrap to another repository with the same manifest only if it has every layer", async () => {
    const { registry, layers, digests } = image("stored-scope");
    const app = proxy(registry, new WatchedStore()).app;
    const first = await app.request(bootstrapUrl("?chunk-size=64k"));
    expect(first.status, await first.clone().text()).toBe(200);
    // The same manifest bytes in two more repositories: one has both layers, one lacks the second.
    const [whole, partial] = ["lib/whole", "lib/partial"];
    registry.addImage(whole, "v1", layers);
    registry.addImage(partial, "v1", layers);
    registry.removeBlob(partial, digests[1]!);
    const url = (repo: string) => `http://skiff.test/v2/${repo}/_skiff/bootstrap/v1?chunk-size=64k`;
    const refused = await app.request(url(partial));
    expect(refused.status).toBe(404);
    expect(((await refused.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe("BLOB_UNKNOWN");
    const shown = await app.request(url(whole));
    expect(shown.status, await shown.clone().text()).toBe(200);
    expect(Buffer.from(await shown.arrayBuffer()).equals(Buffer.from(await first.arrayBuffer()))).toBe(true);
    // Asked about with a HEAD under each name, never downloaded again; the first repository is not asked.
    for (const repo of [whole, partial]) expect(registry.count(`${repo}/blobs/${digests[1]}`, "HEAD")).toBe(1);
    for (const repo of [whole, partial]) for (const d of digests) expect(registry.count(`${repo}/blobs/${d}`, "GET")).toBe(0);
    for (const d of digests) expect(registry.count(`${REPO}/blobs/${d}`, "HEAD")).toBe(0);
    // Confirmed once: asking again costs the upstream nothing.
    expect((await app.request(url(whole))).status).toBe(200);
    expect(registry.count(`${whole}/blobs/${digests[1]}`, "HEAD")).toBe(1);
  });

  it("confirms a stored layer conversion for another repository with one HEAD, once", async () => {
    const { registry, layers, digests } = image("stored-layers");
    const store = new WatchedStore();
    const app = proxy(registry, store).app;
    expect((await app.request(bootstrapUrl("?chunk-size=64k"))).status).toBe(200);
    // Another image of the same layers in the other order: a new image bootstrap, merged from the
    // stored layer conversions. The blobs were evicted, so only the upstream can confirm the layers.
    const other = "lib/reordered";
    registry.addImage(other, "v1", [layers[1]!, layers[0]!]);
    for (const d of digests) await store.delete(blobKey(parseDigest(d)!));
    const url = `http://skiff.test/v2/${other}/_skiff/bootstrap/v1?chunk-size=64k`;
    for (let round = 0; round < 2; round++) {
      const res = await app.request(url);
      expect(res.status, await res.clone().text()).toBe(200);
    }
    for (const d of digests) {
      expect(registry.count(`${other}/blobs/${d}`, "HEAD")).toBe(1);
      expect(registry.count(`${other}/blobs/${d}`, "GET")).toBe(0);
    }
  });

  it("asks for a lone manifest's first layer beside its config, not after it; a warm edge asks for neither", async () => {
    const { registry, digests } = image("cold-config");
    const app = proxy(registry, new WatchedStore(), true).app;
    let layerAsked!: () => void;
    const layerSeen = new Promise<boolean>((resolve) => (layerAsked = () => resolve(true)));
    let layerBeforeConfig: boolean | undefined;
    registry.override = async (req) => {
      if (req.method !== "GET" || !req.url.pathname.includes("/blobs/")) return undefined;
      if (req.url.pathname.endsWith(`/blobs/${digests[0]}`)) layerAsked();
      else if (!digests.some((d) => req.url.pathname.endsWith(d))) {
        // The config is answered once the first layer was asked for, or after a second if it never is.
        layerBeforeConfig = await Promise.race([layerSeen, new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 1000))]);
      }
      return undefined;
    };
    const res = await app.request(bootstrapUrl("?codec=deflate-raw&chunk-size=64k"));
    expect(res.status, await res.clone().text()).toBe(200);
    expect(layerBeforeConfig).toBe(true);
    const asked = registry.requests.length;
    const again = await app.request(bootstrapUrl("?codec=none&chunk-size=64k"));
    expect(again.status).toBe(200);
    expect(registry.requests.slice(asked).filter((r) => r.url.pathname.includes("/blobs/"))).toEqual([]);
    for (const d of digests) expect(registry.count(`${REPO}/blobs/${d}`, "GET")).toBe(1);
  });

  it("none first: a cold deflate-raw request is answered with the none conversion made in the one pass, uncacheable, then deflate-raw from the stored blobs", async () => {
    const { registry, digests } = image("cold-none-first");
    const reference = { none: await twoPass(registry, digests, "?chunk-size=64k"), deflate: await twoPass(registry, digests, "?chunk-size=64k&codec=deflate-raw") };
    const store = new WatchedStore();
    const skiff = proxy(registry, store, true);
    const app = skiff.app;
    const gets = () => digests.map((d) => registry.count(`/blobs/${d}`, "GET"));
    const before = gets();
    const early = await app.request(bootstrapUrl("?chunk-size=64k&codec=deflate-raw"));
    expect(early.status).toBe(200);
    expect(early.headers.get("skiff-params")).toBe("v1-c16-none");
    expect(early.headers.get("cache-control")).toBe("no-store");
    // The deflate-raw conversion waits while the early answer is still going out (a second at most).
    const deflateData = digests.map((d) => layerDataKey(parseDigest(d)!, "v1-c16-deflate-raw"));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(deflateData.filter((k) => store.written.has(k))).toEqual([]);
    expect(Buffer.from(await early.arrayBuffer()).equals(reference.none.bootstrap)).toBe(true);
    expect(skiff.metrics.get("skiff_none_first_answers_total")).toBeGreaterThanOrEqual(1);
    // The deflate-raw conversion goes on after the answer; once stored, it is the answer.
    let later: Response | undefined;
    for (let i = 0; i < 200; i++) {
      later = await app.request(bootstrapUrl("?chunk-size=64k&codec=deflate-raw"));
      if (later.headers.get("skiff-params") === "v1-c16-deflate-raw") break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(later!.headers.get("skiff-params")).toBe("v1-c16-deflate-raw");
    expect(later!.headers.get("cache-control")).toBe("no-cache");
    expect(Buffer.from(await later!.arrayBuffer()).equals(reference.deflate.bootstrap)).toBe(true);
    // One upstream GET per layer, for both conversions.
    expect(gets().map((n, i) => n - before[i]!)).toEqual(digests.map(() => 1));
  });

  it("a blob whose digest fails only at its end: 502, converted to the end yet nothing derived stored, no blob; the right bytes then convert", async () => {
    const { registry, digests, twin } = image("cold-tampered");
    const reference = await twoPass(registry, digests, "?chunk-size=64k");
    const store = new WatchedStore();
    const skiff = proxy(registry, store);
    const held = gate();
    holdBlob(registry, digests[0]!, twin, held.opened);
    const layer = parseDigest(digests[0]!)!;
    const answer = skiff.app.request(bootstrapUrl("?chunk-size=64k"));
    // The converter goes through the twin (it is a valid layer) and writes what it cuts before the
    // last bytes, and with them the digest's failure, arrive: its result is then thrown away. (Without
    // the hold, a converter behind the download could get the failure before it wrote anything: the
    // failure drops what was queued for it. On Node 24 it always did.)
    await until("chunks of the twin are written", () => (store.written.get(layerDataKey(layer, "v1-c16-none")) ?? 0) > 9 * K64);
    held.open();
    const res = await answer;
    expect(res.status).toBe(502);
    expect(((await res.json()) as { errors: { code: string; message: string }[] }).errors[0]).toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("do not match digest") });
    expect(skiff.metrics.get("skiff_verification_failures_total", { kind: "blob" })).toBe(1);
    expect(skiff.metrics.get("skiff_conversions_failed_total")).toBe(1);
    expect(store.keys().filter((k) => k.includes(layer.hex))).toEqual([]);
    registry.override = undefined;
    const again = await skiff.app.request(bootstrapUrl("?chunk-size=64k"));
    expect(again.status).toBe(200);
    expect(Buffer.from(await again.arrayBuffer()).equals(reference.bootstrap)).toBe(true);
    expect(await store.layerState()).toEqual(reference.state);
  });

  it("a layer that is not a tar but matches its digest: 422 as soon as the converter knows, and the blob is still stored as a pull leaves it", async () => {
    const registry = new FakeRegistry();
    const junk = new Uint8Array(gzipSync(new Prng("cold-junk").bytes(300_000)));
    const digest = registry.addBlob([REPO], junk);
    const config = registry.addBlob([REPO], new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux" })));
    registry.addManifest(REPO, "v1", JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 0 }, layers: [{ mediaType: GZIP, digest, size: junk.byteLength }] }));
    const store = new WatchedStore();
    const res = await proxy(registry, store).app.request(bootstrapUrl(""));
    expect(res.status).toBe(422);
    const d = parseDigest(digest)!;
    expect(Buffer.from((await getBytes(store, blobKey(d)))!).equals(Buffer.from(junk))).toBe(true);
    expect(store.keys().filter((k) => k.endsWith(`/_blobs/sha256/${d.hex}`))).toHaveLength(1);
    expect(store.keys().filter((k) => k.startsWith("converted/"))).toEqual([]);
    expect(registry.count(`/blobs/${digest}`, "GET")).toBe(1);
  });

  it("20 bootstrap requests and 3 pulls of the layer during one cold conversion share one upstream GET and one conversion", async () => {
    const { registry, layers, digests } = image("cold-shared");
    const reference = await twoPass(registry, digests, "?chunk-size=64k");
    registry.requests.length = 0;
    const store = new WatchedStore();
    const skiff = proxy(registry, store);
    const held = gate();
    holdBlob(registry, digests[0]!, layers[0]!, held.opened);
    const answers = Array.from({ length: 20 }, () => skiff.app.request(bootstrapUrl("?chunk-size=64k")));
    await until("the layer is being fetched", () => registry.count(`/blobs/${digests[0]}`, "GET") === 1);
    const pulls = Array.from({ length: 3 }, () => skiff.app.request(blobUrl(digests[0]!)));
    await new Promise((resolve) => setTimeout(resolve, 50));
    held.open();
    for (const res of await Promise.all(answers)) {
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(reference.bootstrap)).toBe(true);
    }
    for (const res of await Promise.all(pulls)) {
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.from(layers[0]!))).toBe(true);
    }
    for (const d of digests) expect(registry.count(`/blobs/${d}`, "GET")).toBe(1);
    expect(skiff.metrics.get("skiff_conversions_started_total")).toBe(2);
    expect(await store.layerState()).toEqual(reference.state);
  });

  it("a layer a client is already pulling: the conversion joins that download and reads the stored blob, one upstream GET", async () => {
    const { registry, layers, digests } = image("cold-joined");
    const reference = await twoPass(registry, digests, "");
    registry.requests.length = 0;
    const store = new WatchedStore();
    const app = proxy(registry, store).app;
    const held = gate();
    holdBlob(registry, digests[0]!, layers[0]!, held.opened);
    const pull = app.request(blobUrl(digests[0]!));
    await until("the pull is fetching", () => registry.count(`/blobs/${digests[0]}`, "GET") === 1);
    const answer = app.request(bootstrapUrl(""));
    await new Promise((resolve) => setTimeout(resolve, 50));
    held.open();
    expect(Buffer.from(await (await pull).arrayBuffer()).equals(Buffer.from(layers[0]!))).toBe(true);
    const res = await answer;
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(reference.bootstrap)).toBe(true);
    expect(registry.count(`/blobs/${digests[0]}`, "GET")).toBe(1);
    expect(store.reads.get(blobKey(parseDigest(digests[0]!)!))).toBeGreaterThan(0);
    expect(await store.layerState()).toEqual(reference.state);
  });
});
