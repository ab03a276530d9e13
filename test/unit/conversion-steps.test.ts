// The proxy converting in steps: each bootstrap request does one step's worth and answers 202 until
// the last, several app instances sharing one store (isolates sharing an R2 bucket) take turns
// through the lease, and the result is byte for byte the one-pass result.
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { layerCheckpointKey, layerLeaseKey } from "../../src/store/keys.ts";
import { resolveConfig } from "../../src/config/config.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { createApp } from "../../src/http/app.ts";
import { Lease, LeaseLost } from "../../src/store/lease.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { getBytes, type ContentStore } from "../../src/store/store.ts";
import { Prng, tarArchive } from "../e2e/harness/images.ts";
import { FakeRegistry } from "./fakes.ts";

const K64 = 64 * 1024;
const PARAMS = "v1-c16-none";

describe("Lease", () => {
  const key = "converted/lease";
  const clock = () => {
    const c = { t: 1_000, now: () => c.t };
    return c;
  };

  it("is held by one at a time until it runs out, then taken over; the old holder learns it lost", async () => {
    const store = new MemoryStore();
    const c = clock();
    const first = await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now });
    expect(first).not.toBeNull();
    expect(await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now })).toBeNull();
    await first!.confirm(); // renews: still ours
    c.t += 59_000;
    expect(await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now })).toBeNull();
    c.t += 61_000;
    const second = await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now });
    expect(second).not.toBeNull();
    await expect(first!.confirm()).rejects.toThrow(LeaseLost);
    await first!.release(); // a lost lease is not released over the new holder
    expect(await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now })).toBeNull();
    await second!.release();
    await expect(second!.confirm()).rejects.toThrow(LeaseLost);
    expect(await Lease.acquire(store, key, { ttlMs: 60_000, now: c.now })).not.toBeNull();
  });

  it("renews itself while held", async () => {
    const store = new MemoryStore();
    const lease = await Lease.acquire(store, key, { ttlMs: 60 });
    const before = (await store.getVersioned(key))!.version;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await store.getVersioned(key))!.version).not.toBe(before);
    expect(await Lease.acquire(store, key, { ttlMs: 60 })).toBeNull();
    await lease!.release();
  });

  it("concurrent renewals by one holder do not lose it", async () => {
    const store = new MemoryStore();
    const lease = (await Lease.acquire(store, key, { ttlMs: 60_000 }))!;
    await Promise.all([lease.confirm(), lease.confirm(), lease.confirm()]);
    await lease.release();
  });

  it("an unreadable record counts as run out", async () => {
    const store = new MemoryStore();
    await store.putIfVersion(key, new TextEncoder().encode("{"), null);
    expect(await Lease.acquire(store, key, { ttlMs: 60_000 })).not.toBeNull();
  });

  it("on a store without compare-and-swap, is always granted (the process's own single flight rules)", async () => {
    const memory = new MemoryStore();
    const plain: ContentStore = { stat: (k) => memory.stat(k), get: (k, s) => memory.get(k, s), put: (k) => memory.put(k), delete: (k) => memory.delete(k) };
    expect(await Lease.acquire(plain, key, { ttlMs: 60_000 })).not.toBeNull();
    expect(await Lease.acquire(plain, key, { ttlMs: 60_000 })).not.toBeNull();
  });
});

/** A two-layer image on a fake registry. */
function imageRegistry() {
  const registry = new FakeRegistry();
  const prng = new Prng("conversion-steps");
  const shared = prng.bytes(2 * K64);
  const layers = [
    gzipSync(tarArchive([{ name: "a", type: "dir" }, { name: "a/big", type: "file", data: prng.bytes(9 * K64 + 5) }, { name: "a/dup", type: "file", data: Buffer.concat([shared, shared]) }])),
    gzipSync(tarArchive([{ name: "b", type: "file", data: prng.bytes(6 * K64) }, { name: "c", type: "file", data: shared }])),
  ];
  const repo = "lib/app";
  const layerDigests = layers.map((l) => registry.addBlob([repo], new Uint8Array(l)));
  const config = registry.addBlob([repo], new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } })));
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 0 },
    layers: layers.map((l, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: layerDigests[i], size: l.byteLength })),
  };
  registry.addManifest(repo, "v1", JSON.stringify(manifest));
  return { registry, repo, layerDigests };
}

function proxy(registry: FakeRegistry, store: ContentStore, convertStepBytes?: number, more: { convertWaitSeconds?: number; now?: () => number } = {}) {
  const config = resolveConfig({ upstreams: { "upstream.test": { url: registry.origin, public: true } }, defaultUpstream: "upstream.test", access: { mode: "open" } }, { env: {} });
  return createApp({ config, store, hasher: nodeHasher, fetchFor: () => registry.fetch, convertStepBytes, convertWaitSeconds: 30, ...more }).app;
}

/**
 * A store whose reads of image bootstraps never answer while `hang` is set: what a job's I/O does
 * once the invocation that ran it has ended (Workers).
 */
class HangingStore extends MemoryStore {
  hang = false;
  override async get(key: string, span?: { offset: number; length: number }) {
    if (this.hang && key.startsWith("converted/images/")) return new Promise<never>(() => {});
    return super.get(key, span);
  }
}

const bootstrapPath = (repo: string) => `http://skiff.test/v2/${repo}/_skiff/bootstrap/v1?chunk-size=64k`;

describe("bootstrap requests converting in steps", () => {
  it("answer 202 per step, alternate between instances sharing the store, and end with the one-pass bootstrap", async () => {
    const { registry, repo, layerDigests } = imageRegistry();
    const once = await proxy(registry, new MemoryStore()).request(bootstrapPath(repo));
    expect(once.status).toBe(200);
    const expected = new Uint8Array(await once.arrayBuffer());

    const shared = new MemoryStore();
    const instances = [proxy(registry, shared, 2 * K64), proxy(registry, shared, 2 * K64)];
    let accepted = 0;
    let final: Response | undefined;
    for (let i = 0; i < 200 && !final; i++) {
      const res = await instances[i % 2]!.request(bootstrapPath(repo));
      if (res.status === 202) {
        expect(res.headers.get("retry-after")).toBe("5");
        expect(await res.json()).toEqual({ status: "converting", retryAfter: 5 });
        accepted++;
      } else {
        final = res;
      }
    }
    expect(final?.status, final && (await final.clone().text())).toBe(200);
    expect(Buffer.from(await final!.arrayBuffer()).equals(Buffer.from(expected))).toBe(true);
    // 24 chunks in all at two per step, and a few steps that only find a layer's end.
    expect(accepted).toBeGreaterThanOrEqual(10);
    // Nothing of the steps is left: no checkpoint, segment or held lease.
    for (const layer of layerDigests) expect(await getBytes(shared, layerCheckpointKey(parseDigest(layer)!, PARAMS))).toBeNull();
    expect(shared.keys().filter((k) => k.includes("/steps/segment-"))).toEqual([]);
    expect(shared.keys().filter((k) => k.includes("/steps/checkpoint"))).toEqual([]);
  });

  it("never wait on a job that does not move: 202 within the bound, and the job started again once it has outlived a lease", async () => {
    const { registry, repo } = imageRegistry();
    const expected = new Uint8Array(await (await proxy(registry, new MemoryStore()).request(bootstrapPath(repo))).arrayBuffer());
    const store = new HangingStore();
    const clock = { t: 1_000 };
    const app = proxy(registry, store, 2 * K64, { convertWaitSeconds: 1, now: () => clock.t });
    store.hang = true;
    const stuck = await app.request(bootstrapPath(repo));
    expect(stuck.status).toBe(202);
    store.hang = false;
    // Within a lease, later requests join the job that does not move, and are answered 202 too.
    expect((await app.request(bootstrapPath(repo))).status).toBe(202);
    clock.t += 121_000;
    let res = await app.request(bootstrapPath(repo));
    for (let i = 0; i < 200 && res.status === 202; i++) res = await app.request(bootstrapPath(repo));
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(Buffer.from(expected))).toBe(true);
  }, 30_000);

  it("leave a layer another instance holds the lease on alone, and go on once it is free", async () => {
    const { registry, repo, layerDigests } = imageRegistry();
    const store = new MemoryStore();
    const app = proxy(registry, store, 1 << 30);
    const other = await Lease.acquire(store, layerLeaseKey(parseDigest(layerDigests[0]!)!, PARAMS), { ttlMs: 60_000 });
    expect(other).not.toBeNull();
    const held = await app.request(bootstrapPath(repo));
    expect(held.status).toBe(202);
    expect(await getBytes(store, layerCheckpointKey(parseDigest(layerDigests[0]!)!, PARAMS))).toBeNull();
    expect(store.keys().filter((k) => k.startsWith("converted/") && !k.endsWith("/steps/lease"))).toEqual([]);
    await other!.release();
    expect((await app.request(bootstrapPath(repo))).status).toBe(200);
  });
});
