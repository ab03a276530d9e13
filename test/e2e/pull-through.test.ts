// Pull-through with real clients: skopeo through skiff gets exactly what it gets from the registry,
// and keeps getting it from skiff's cache when the registry is gone.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildImage, buildIndex, pushImage, sha256, MT, type ImageInfo, type IndexInfo } from "./harness/images.ts";
import { skopeoCopy, skopeoInspectRaw } from "./harness/skopeo.ts";
import { compareTrees, listFiles } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let skiff: Skiff;
let layout: OciLayout;
let image: ImageInfo;
let index: IndexInfo;

const ACCEPT = [MT.manifest, MT.index, "application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"].join(", ");

function expectSameTree(direct: string, viaSkiff: string): void {
  const diff = compareTrees(direct, viaSkiff);
  expect(diff.onlyInA, "files only in the direct copy").toEqual([]);
  expect(diff.onlyInB, "files only in the copy through skiff").toEqual([]);
  expect(diff.different, "files that differ").toEqual([]);
  expect(diff.same.length).toBeGreaterThan(2);
}

beforeAll(async () => {
  registry = await Registry.start({ name: "pull-registry" });
  layout = new OciLayout(tempDir("pull-layout"));
  image = buildImage(layout, { tag: "v1", seed: "pull-through", layers: 3, filesPerLayer: 4, fileSize: 48 * 1024 });
  index = buildIndex(layout, {
    tag: "multi",
    seed: "pull-multi",
    platforms: [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
      { os: "linux", architecture: "s390x" },
    ],
  });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  await pushImage(layout, "multi", `${registry.hostPort}/e2e/multi:latest`, { all: true });
  skiff = await Skiff.start({ upstream: registry.url });
});

afterAll(async () => {
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

describe("skopeo through skiff", () => {
  test("copy through skiff is byte-identical to a direct copy, also with the registry stopped", async () => {
    const direct = tempDir("direct");
    await skopeoCopy(`docker://${registry.hostPort}/e2e/app:v1`, `dir:${direct}`);
    expect(listFiles(direct)).toContain("manifest.json");

    const first = tempDir("via-skiff-1");
    const before = await skiff.metrics();
    await skopeoCopy(`docker://${skiff.hostPort}/e2e/app:v1`, `dir:${first}`);
    expectSameTree(direct, first);
    const afterFirst = await skiff.metrics();
    expect(afterFirst.get("skiff_http_requests_total") ?? 0).toBeGreaterThan(before.get("skiff_http_requests_total") ?? 0);
    expect(afterFirst.get("skiff_upstream_requests_total") ?? 0).toBeGreaterThan(before.get("skiff_upstream_requests_total") ?? 0);

    // A second pull with the registry up: no blob is fetched from the registry again.
    const logBefore = await registry.settledRequestCount();
    const second = tempDir("via-skiff-2");
    await skopeoCopy(`docker://${skiff.hostPort}/e2e/app:v1`, `dir:${second}`);
    expectSameTree(direct, second);
    await registry.settledRequestCount();
    const blobFetches = registry
      .accessLog()
      .slice(logBefore)
      .filter((l) => l.method === "GET" && l.path.includes("/blobs/"));
    expect(blobFetches.map((l) => l.path), "blob GETs that reached the registry on a warm pull").toEqual([]);

    // Registry gone: everything comes from skiff's cache (the tag answer served stale).
    await registry.stop();
    try {
      const hitsBefore = await skiff.metric("skiff_cache_hits_total");
      const third = tempDir("via-skiff-offline");
      await skopeoCopy(`docker://${skiff.hostPort}/e2e/app:v1`, `dir:${third}`, { timeoutMs: 120_000 });
      expectSameTree(direct, third);
      expect(await skiff.metric("skiff_cache_hits_total")).toBeGreaterThan(hitsBefore);
    } finally {
      await registry.start();
    }
  }, 180_000);

  test("a multi-platform index passes through byte for byte (inspect --raw, copy --all)", async () => {
    const rawDirect = await skopeoInspectRaw(`${registry.hostPort}/e2e/multi:latest`);
    expect(rawDirect.equals(index.indexBytes)).toBe(true);
    const rawSkiff = await skopeoInspectRaw(`${skiff.hostPort}/e2e/multi:latest`);
    expect(rawSkiff.toString("utf8")).toBe(index.indexBytes.toString("utf8"));

    const direct = tempDir("multi-direct");
    const via = tempDir("multi-via");
    await skopeoCopy(`docker://${registry.hostPort}/e2e/multi:latest`, `dir:${direct}`, { all: true });
    await skopeoCopy(`docker://${skiff.hostPort}/e2e/multi:latest`, `dir:${via}`, { all: true });
    expectSameTree(direct, via);
    // Every platform's manifest is there (dir: names them <digest-hex>.manifest.json).
    for (const img of index.images) {
      expect(listFiles(via)).toContain(`${img.manifest.digest.slice("sha256:".length)}.manifest.json`);
    }
  }, 120_000);

  test("manifest GET/HEAD by tag and digest: same bytes, Content-Type and Docker-Content-Digest as the registry", async () => {
    for (const ref of ["v1", image.manifest.digest]) {
      const url = `/v2/e2e/app/manifests/${ref}`;
      const direct = await fetch(registry.url + url, { headers: { accept: ACCEPT } });
      const via = await fetch(skiff.url + url, { headers: { accept: ACCEPT } });
      const a = Buffer.from(await direct.arrayBuffer());
      const b = Buffer.from(await via.arrayBuffer());
      expect(via.status).toBe(200);
      expect(b.equals(a)).toBe(true);
      expect(sha256(b)).toBe(image.manifest.digest);
      expect(via.headers.get("docker-content-digest")).toBe(image.manifest.digest);
      expect(via.headers.get("content-type")).toBe(direct.headers.get("content-type"));
      const head = await fetch(skiff.url + url, { method: "HEAD", headers: { accept: ACCEPT } });
      expect(head.status).toBe(200);
      expect(head.headers.get("docker-content-digest")).toBe(image.manifest.digest);
      expect(head.headers.get("content-length")).toBe(String(a.length));
    }
  });

  test("?ns= equal to the upstream is served; any other ns is NAME_UNKNOWN and contacts nothing", async () => {
    const ok = await fetch(`${skiff.url}/v2/e2e/app/manifests/v1?ns=${encodeURIComponent(registry.hostPort)}`, {
      headers: { accept: ACCEPT },
    });
    expect(ok.status).toBe(200);
    expect(Buffer.from(await ok.arrayBuffer()).equals(image.manifestBytes)).toBe(true);

    const logBefore = await registry.settledRequestCount();
    const upBefore = await skiff.metric("skiff_upstream_requests_total");
    for (const path of ["/v2/e2e/app/manifests/v1", `/v2/e2e/app/blobs/${image.layers[0]!.digest}`, "/v2/e2e/other/manifests/latest"]) {
      const res = await fetch(`${skiff.url}${path}?ns=other.example:5000`, { headers: { accept: ACCEPT } });
      expect(res.status, path).toBe(404);
      const body = (await res.json()) as { errors?: { code?: string }[] };
      expect(body.errors?.[0]?.code, path).toBe("NAME_UNKNOWN");
    }
    expect((await registry.settledRequestCount()) - logBefore).toBe(0);
    expect(await skiff.metric("skiff_upstream_requests_total")).toBe(upBefore);
  });

  test("unknown tag and unknown repository are OCI 404 errors", async () => {
    const tag = await fetch(`${skiff.url}/v2/e2e/app/manifests/no-such-tag`, { headers: { accept: ACCEPT } });
    expect(tag.status).toBe(404);
    const tagBody = (await tag.json()) as { errors?: { code?: string }[] };
    expect(["MANIFEST_UNKNOWN", "NAME_UNKNOWN"]).toContain(tagBody.errors?.[0]?.code);
    const blob = await fetch(`${skiff.url}/v2/e2e/app/blobs/sha256:${"0".repeat(64)}`);
    expect(blob.status).toBe(404);
    const blobBody = (await blob.json()) as { errors?: { code?: string }[] };
    expect(blobBody.errors?.[0]?.code).toBe("BLOB_UNKNOWN");
  });
});

describe("tag TTL", () => {
  test("a tag answer is reused within --tag-ttl and asked again after it", async () => {
    const TTL = 4;
    const other = buildImage(layout, { tag: "v2", seed: "pull-through-v2", layers: 1 });
    await pushImage(layout, "v1", `${registry.hostPort}/e2e/ttl:current`);
    await pushImage(layout, "v2", `${registry.hostPort}/e2e/ttl:next`); // v2's blobs are in the repository
    const ttlSkiff = await Skiff.start({ upstream: registry.url, tagTtl: TTL });
    try {
      const get = async () => {
        const res = await fetch(`${ttlSkiff.url}/v2/e2e/ttl/manifests/current`, { headers: { accept: ACCEPT } });
        expect(res.status).toBe(200);
        return sha256(Buffer.from(await res.arrayBuffer()));
      };
      const tagRequests = () =>
        registry.accessLog().filter((l) => l.path.startsWith("/v2/e2e/ttl/manifests/current")).length;
      const t0 = Date.now();
      expect(await get()).toBe(image.manifest.digest);
      const t1 = Date.now(); // skiff stored the answer between t0 and t1
      expect(tagRequests()).toBeGreaterThan(0);
      // Retag upstream (a direct manifest PUT: quick), then within the TTL skiff answers from its cache.
      const put = await fetch(`${registry.url}/v2/e2e/ttl/manifests/current`, {
        method: "PUT",
        headers: { "content-type": MT.manifest },
        body: new Uint8Array(other.manifestBytes),
      });
      expect(put.status).toBe(201);
      const afterPut = tagRequests();
      expect(await get()).toBe(image.manifest.digest);
      expect(Date.now() - t0, "the within-TTL check ran too late to mean anything").toBeLessThan(TTL * 1000);
      expect(tagRequests()).toBe(afterPut);
      // After the TTL the new answer comes through.
      await new Promise((r) => setTimeout(r, Math.max(0, TTL * 1000 + 500 - (Date.now() - t1))));
      expect(await get()).toBe(other.manifest.digest);
      expect(tagRequests()).toBeGreaterThan(afterPut);
    } finally {
      await ttlSkiff.stop();
    }
  }, 60_000);
});
