// The Worker entry in workerd (the deployment bundle in Miniflare, local R2) in front of a real
// Distribution registry: skopeo and ctr pull through it, a cold blob is verified into R2 and served
// from there, and the lazy API gives the same bootstrap and chunks as the Node proxy, also when a
// small CONVERT_STEP makes every layer take many requests, and zstd layers convert alike through
// workerd's own decoder; learned-prefetch reports are merged in R2.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { WorkerSkiff } from "./harness/worker.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { compareTrees } from "./harness/files.ts";
import { transfer } from "./harness/http.ts";
import { learnedRoundTrip } from "./harness/learned.ts";
import { tempDir } from "./harness/workdir.ts";
import { pushZstdImages, zstdConversions } from "./harness/zstd-images.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let worker: WorkerSkiff;
let image: ImageInfo;

beforeAll(async () => {
  registry = await Registry.start({ name: "worker-registry" });
  const layout = new OciLayout(tempDir("worker-layout"));
  // Layers bigger than one R2 part (8 MiB), so blobs go through multipart uploads.
  image = buildImage(layout, { tag: "v1", seed: "worker", layers: 3, filesPerLayer: 3, fileSize: 4 * 1024 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  worker = await WorkerSkiff.start({ upstream: registry.url });
}, 180_000);

afterAll(async () => {
  await worker?.stop();
  await registry?.stop();
  await teardown();
});

describe("skiff in workerd with R2", () => {
  test("skopeo through the Worker is byte-identical to a direct copy, and a second pull needs no upstream blob", async () => {
    const direct = tempDir("worker-direct");
    await skopeoCopy(`docker://${registry.hostPort}/e2e/app:v1`, `dir:${direct}`);
    for (const round of [1, 2]) {
      const via = tempDir(`worker-via-${round}`);
      const before = await registry.settledRequestCount();
      const t0 = Date.now();
      await skopeoCopy(`docker://${worker.hostPort}/e2e/app:v1`, `dir:${via}`, { timeoutMs: 180_000 });
      console.log(`worker pull round ${round}: ${Date.now() - t0} ms`);
      const diff = compareTrees(direct, via);
      expect(diff.different).toEqual([]);
      expect(diff.onlyInA).toEqual([]);
      expect(diff.same.length).toBe(image.layers.length + 3);
      const blobGets = registry.accessLog().slice(before).filter((l) => l.method === "GET" && l.path.includes("/blobs/"));
      if (round === 2) expect(blobGets).toEqual([]);
    }
  }, 300_000);

  test("/healthz and /readyz (a probe write to R2); /metrics only to requests bearing METRICS_TOKEN", async () => {
    expect(await (await fetch(`${worker.url}/healthz`)).text()).toBe("ok\n");
    const ready = await fetch(`${worker.url}/readyz`);
    expect([ready.status, await ready.text()]).toEqual([200, "ready\n"]);
    expect((await fetch(`${worker.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${worker.url}/metrics`, { headers: { Authorization: "Bearer wrong" } })).status).toBe(401);
    expect(await worker.metricsText()).toMatch(/^skiff_http_requests_total\{kind="other",method="GET",status="200"\} [1-9]/m);
  });

  test("ranges of a cached blob come from R2", async () => {
    const layer = image.layers[1]!;
    const end = Math.min(layer.size - 1, 9_000_000);
    const res = await transfer(`${worker.url}/v2/e2e/app/blobs/${layer.digest}`, { headers: { Range: `bytes=100-${end}` } });
    expect(res.status).toBe(206);
    expect(res.headers.get("content-range")).toBe(`bytes 100-${end}/${layer.size}`);
    expect(res.body.equals(image.layout.readBlob(layer.digest).subarray(100, end + 1))).toBe(true);
  });

  test("ctr pulls through the Worker as a hosts.toml mirror", async () => {
    const containerd = await Containerd.start();
    try {
      const hostsDir = tempDir("worker-hosts");
      writeMirrorHostsToml(hostsDir, registry.hostPort, worker.url);
      const ref = `${registry.hostPort}/e2e/app:v1`;
      const r = await containerd.pull(ref, { hostsDir });
      expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
    } finally {
      await containerd.stop();
    }
  }, 300_000);

  test("the lazy API: bootstrap, a data range and a chunk are byte-identical to the Node proxy's", async () => {
    const node = await Skiff.start({ upstream: registry.url });
    try {
      const path = `/v2/e2e/app/_skiff/bootstrap/${image.manifest.digest}`;
      const fromWorker = await transfer(`${worker.url}${path}`, {}, 120_000);
      const fromNode = await transfer(`${node.url}${path}`, {}, 120_000);
      expect(fromWorker.status, fromWorker.body.toString("utf8").slice(0, 500)).toBe(200);
      expect(fromNode.status).toBe(200);
      expect(fromWorker.body.equals(fromNode.body)).toBe(true);
      expect(fromWorker.headers.get("docker-content-digest")).toBe(fromNode.headers.get("docker-content-digest"));

      const layer = image.layers[0]!.digest;
      const params = fromNode.headers.get("skiff-params")!;
      const data = `/v2/e2e/app/_skiff/layers/${layer}/${params}/data`;
      const range = { Range: "bytes=1000-2099999" };
      const a = await transfer(`${worker.url}${data}`, { headers: range });
      const b = await transfer(`${node.url}${data}`, { headers: range });
      expect(a.status).toBe(206);
      expect(a.body.equals(b.body)).toBe(true);
    } finally {
      await node.stop();
    }
  }, 300_000);

  test("zstd layers: workerd's decoder (node:zlib's) converts them to the Node proxy's bootstrap and data, and refuses a truncated one alike", async () => {
    await pushZstdImages(registry, "e2e/zstd");
    const node = await Skiff.start({ upstream: registry.url });
    try {
      const [fromNode, fromWorker] = await Promise.all([node, worker].map((s) => zstdConversions(s, "e2e/zstd")));
      expect(fromNode!.status, fromNode!.problem).toBe(200);
      expect(fromWorker!.status, fromWorker!.problem).toBe(200);
      expect(fromWorker!.bootstrap.equals(fromNode!.bootstrap)).toBe(true);
      expect(fromNode!.data).toHaveLength(2);
      fromNode!.data.forEach((data, i) => expect(fromWorker!.data[i]!.equals(data), `data blob ${i}`).toBe(true));
      expect(fromNode!.refusal).toEqual({ status: 422, code: "MANIFEST_INVALID" });
      expect(fromWorker!.refusal).toEqual(fromNode!.refusal);
    } finally {
      await node.stop();
    }
  }, 300_000);

  test("learned prefetch: a report POSTed to the Worker is merged in R2 and served back, the foreign digest dropped", async () => {
    const r = await learnedRoundTrip(worker.url, "e2e/app", image.manifest.digest);
    expect(r.before).toBeNull();
    expect(r.after).toEqual([r.chunks.at(-1), r.chunks[0], r.chunks[1]]);
  }, 300_000);

  test("a conversion forced through many steps (CONVERT_STEP=1m) gives the Node proxy's bootstrap and data blobs", async () => {
    const stepped = await WorkerSkiff.start({ upstream: registry.url, vars: { CONVERT_STEP: "1m" } });
    const node = await Skiff.start({ upstream: registry.url });
    try {
      const path = `/v2/e2e/app/_skiff/bootstrap/${image.manifest.digest}`;
      let accepted = 0;
      let res = await transfer(`${stepped.url}${path}`, {}, 120_000);
      // Several MiB per layer at 1 MiB per step: several requests per layer, each answered 202.
      for (let i = 0; i < 200 && res.status === 202; i++) {
        accepted++;
        res = await transfer(`${stepped.url}${path}`, {}, 120_000);
      }
      expect(res.status, res.body.toString("utf8").slice(0, 500)).toBe(200);
      expect(accepted).toBeGreaterThanOrEqual(3 * image.layers.length);
      const fromNode = await transfer(`${node.url}${path}`, {}, 120_000);
      expect(res.body.equals(fromNode.body)).toBe(true);

      const params = fromNode.headers.get("skiff-params")!;
      for (const layer of image.layers) {
        const data = `/v2/e2e/app/_skiff/layers/${layer.digest}/${params}/data`;
        const a = await transfer(`${stepped.url}${data}`, {}, 120_000);
        const b = await transfer(`${node.url}${data}`, {}, 120_000);
        expect(a.status).toBe(200);
        expect(a.body.equals(b.body)).toBe(true);
        expect(a.headers.get("etag")).toBe(b.headers.get("etag"));
      }
      const steps = /^skiff_conversion_steps_total (\d+)/m.exec(await stepped.metricsText());
      console.log(`worker conversion in steps: ${accepted} answers 202, ${steps?.[1]} steps paused`);
    } finally {
      await node.stop();
      await stepped.stop();
    }
  }, 600_000);
});
