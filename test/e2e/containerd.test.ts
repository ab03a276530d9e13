// containerd pulling through skiff as a registry mirror configured by hosts.toml.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { readFileSync } from "node:fs";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { OciLayout, buildImage, buildIndex, pushImage, type ImageInfo, type IndexInfo } from "./harness/images.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let skiff: Skiff;
let containerd: Containerd;
let image: ImageInfo;
let index: IndexInfo;
let hostsDir: string;

beforeAll(async () => {
  registry = await Registry.start({ name: "ctr-registry" });
  const layout = new OciLayout(tempDir("ctr-layout"));
  image = buildImage(layout, { tag: "v1", seed: "containerd", layers: 3, filesPerLayer: 3, fileSize: 64 * 1024 });
  index = buildIndex(layout, {
    tag: "multi",
    seed: "containerd-multi",
    platforms: [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
    ],
  });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/ctr:v1`);
  await pushImage(layout, "multi", `${registry.hostPort}/e2e/ctr-multi:latest`, { all: true });
  skiff = await Skiff.start({ upstream: registry.url });
  containerd = await Containerd.start();
  hostsDir = tempDir("hosts.d");
  writeMirrorHostsToml(hostsDir, registry.hostPort, skiff.url);
});

afterAll(async () => {
  await containerd?.stop();
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

describe("containerd through skiff (hosts.toml mirror)", () => {
  test("hosts.toml has the documented shape", () => {
    const toml = readFileSync(`${hostsDir}/${registry.hostPort}/hosts.toml`, "utf8");
    expect(toml).toContain(`server = "http://${registry.hostPort}"`);
    expect(toml).toContain(`[host."${skiff.url}"]`);
    expect(toml).toContain(`capabilities = ["pull", "resolve"]`);
  });

  test("ctr image pull goes through skiff and yields the pushed manifest digest", async () => {
    const ref = `${registry.hostPort}/e2e/ctr:v1`;
    const requestsBefore = await skiff.metric("skiff_http_requests_total");
    const servedBefore = await skiff.metric("skiff_served_bytes_total");
    const upstreamBefore = await skiff.metric("skiff_upstream_requests_total");
    const logBefore = await registry.settledRequestCount();

    const r = await containerd.pull(ref, { hostsDir });
    expect(r.code, `ctr pull failed:\n${r.stdout}\n${r.stderr}\nskiff log:\n${skiff.log().slice(-3000)}`).toBe(0);

    const pulled = (await containerd.images()).find((i) => i.ref === ref);
    expect(pulled?.digest).toBe(image.manifest.digest);

    // skiff answered the pull: its request counter grew by at least manifest + config + layers,
    // and it served at least the layers' bytes.
    const requestsAfter = await skiff.metric("skiff_http_requests_total");
    expect(requestsAfter - requestsBefore).toBeGreaterThanOrEqual(2 + image.layers.length);
    const layerBytes = image.layers.reduce((n, l) => n + l.size, 0);
    expect((await skiff.metric("skiff_served_bytes_total")) - servedBefore).toBeGreaterThanOrEqual(layerBytes);

    // The registry saw requests only from skiff, never from containerd directly: every request in its
    // access log is one of skiff's upstream requests (a fallback to the server would add more).
    await registry.settledRequestCount();
    const lines = registry.accessLog().slice(logBefore);
    expect(lines.length).toBeGreaterThan(0);
    const upstreamRequests = (await skiff.metric("skiff_upstream_requests_total")) - upstreamBefore;
    expect(lines.length, lines.map((l) => `${l.method} ${l.path} ${l.userAgent}`).join("\n")).toBeLessThanOrEqual(upstreamRequests);
    for (const l of image.layers) {
      expect(lines.some((x) => x.method === "GET" && x.path.startsWith(`/v2/e2e/ctr/blobs/${l.digest}`)), l.digest).toBe(true);
    }
  }, 180_000);

  test("a second containerd pull of the same image (fresh content store) comes from skiff's cache", async () => {
    const second = await Containerd.start();
    try {
      const ref = `${registry.hostPort}/e2e/ctr:v1`;
      const logBefore = await registry.settledRequestCount();
      const r = await second.pull(ref, { hostsDir });
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect((await second.images()).find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
      await registry.settledRequestCount();
      const blobGets = registry
        .accessLog()
        .slice(logBefore)
        .filter((l) => l.method === "GET" && l.path.includes("/blobs/"));
      expect(blobGets.map((l) => l.path)).toEqual([]);
    } finally {
      await second.stop();
    }
  }, 180_000);

  test("a multi-platform index pulls through skiff (--all-platforms)", async () => {
    const ref = `${registry.hostPort}/e2e/ctr-multi:latest`;
    const logBefore = await registry.settledRequestCount();
    const upstreamBefore = await skiff.metric("skiff_upstream_requests_total");
    const r = await containerd.pull(ref, { hostsDir, allPlatforms: true });
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(index.index.digest);
    await registry.settledRequestCount();
    const lines = registry.accessLog().slice(logBefore);
    expect(lines.length).toBeGreaterThan(0);
    const upstreamRequests = (await skiff.metric("skiff_upstream_requests_total")) - upstreamBefore;
    expect(lines.length, lines.map((l) => `${l.method} ${l.path} ${l.userAgent}`).join("\n")).toBeLessThanOrEqual(upstreamRequests);
    // Every platform's manifest and layers came through.
    for (const img of index.images) {
      expect(lines.some((l) => l.path.startsWith(`/v2/e2e/ctr-multi/manifests/${img.manifest.digest}`)), img.manifest.digest).toBe(true);
    }
  }, 180_000);
});
