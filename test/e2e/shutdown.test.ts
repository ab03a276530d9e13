// Shutdown as Kubernetes does it (SIGTERM, then SIGKILL after the grace period): skiff stops
// accepting, lets the responses in flight finish within --shutdown-timeout, cuts what is left, and
// exits 0. A containerd pull in flight (the registry behind a 40 Mbit/s link, so the layer takes
// seconds) finishes; a response that would never end is cut at the timeout; a conversion cut
// by the exit publishes nothing, and the next start on the same store finishes it.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { join, relative } from "node:path";
import { Agent, fetch as undiciFetch } from "undici";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { startLinkRelay, type LinkRelay } from "../../bench/link-relay.mjs";
import { Containerd } from "./harness/containerd.ts";
import { transfer } from "./harness/http.ts";
import { buildImage, OciLayout, pushImage, type ImageInfo } from "./harness/images.ts";
import { sleep, waitFor } from "./harness/processes.ts";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { teardown } from "./harness/teardown.ts";
import { makeTls } from "./harness/tls.ts";
import { tempDir } from "./harness/workdir.ts";

const MiB = 2 ** 20;

let registry: Registry;
let relay: LinkRelay;
let big: ImageInfo;
let small: ImageInfo;

beforeAll(async () => {
  registry = await Registry.start({ name: "shutdown-registry" });
  const layout = new OciLayout(tempDir("shutdown-layout"));
  // One layer, so that once its transfer is under way the pull needs no new connection.
  big = buildImage(layout, { tag: "big", seed: "shutdown-big", layers: 1, filesPerLayer: 4, fileSize: 4 * MiB });
  small = buildImage(layout, { tag: "small", seed: "shutdown-small", layers: 2, filesPerLayer: 3, fileSize: 2 * MiB });
  await pushImage(layout, "big", `${registry.hostPort}/e2e/big:v1`);
  await pushImage(layout, "small", `${registry.hostPort}/e2e/small:v1`);
  relay = await startLinkRelay({ target: { host: "127.0.0.1", port: registry.port }, rateBitsPerSecond: 40e6 });
}, 120_000);

afterAll(async () => {
  await relay?.close();
  await registry?.stop();
  await teardown();
});

const slowUpstream = () => `http://127.0.0.1:${relay.port}`;

/** Whether a new TCP connection to `hostPort` is refused. */
function refused(hostPort: string): Promise<boolean> {
  const { hostname, port } = new URL(`http://${hostPort}`);
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname);
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

/** Whether new connections are refused within a moment (Deno closes its listener on its own time). */
async function refusedSoon(hostPort: string): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    if (await refused(hostPort)) return true;
    await sleep(50);
  }
  return false;
}

async function untilLogged(skiff: Skiff, pattern: RegExp): Promise<void> {
  await waitFor(`skiff's log to match ${pattern}`, () => (pattern.test(skiff.log()) ? true : undefined), { timeoutMs: 10_000, intervalMs: 20 });
}

/** The files of the store's conversions, relative to its `converted` directory. */
function convertedFiles(data: string): string[] {
  const dir = join(data, "converted");
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)));
}

/** What readers look for: image bootstraps, and layer bootstraps. */
const published = (data: string) => convertedFiles(data).filter((f) => f.startsWith("images/") || f.endsWith("/bootstrap"));
const steps = (data: string) => convertedFiles(data).filter((f) => f.includes("/steps/"));

describe.each(["node", "deno"] as const)("SIGTERM on %s", (runtime) => {
  // The pull is containerd's, as kubelet's is: it asks for the config beside the layers, so once the
  // one layer is on its way the pull needs no new connection. (skopeo asks for the config only after
  // the layers, on a new connection, which a stopping server refuses: it would fail here whatever
  // the server did, short of accepting connections after the signal.)
  test("during a pull: containerd's pull finishes with every digest verified, new connections are refused, skiff exits 0", async () => {
    const skiff = await Skiff.start({ upstream: slowUpstream(), runtime });
    const containerd = await Containerd.start();
    try {
      let pulled = false;
      const ref = `${skiff.hostPort}/e2e/big:v1`;
      const pulling = containerd.pull(ref).finally(() => (pulled = true));
      // The layer's transfer is under way: about 16 MiB over 40 Mbit/s, some 3 s to go.
      await waitFor("the layer's transfer to begin", async () => ((await skiff.metric("skiff_upstream_bytes_total")) > 2 * MiB ? true : undefined), { timeoutMs: 60_000, intervalMs: 50 });
      expect(pulled).toBe(false);

      skiff.signal("SIGTERM");
      await untilLogged(skiff, /SIGTERM: shutting down; waiting up to 25 s for 1 response\(s\) in flight/);
      expect(await refusedSoon(skiff.hostPort), "a new connection after the signal").toBe(true);
      expect(pulled, "the pull was still in flight after the signal").toBe(false);

      const result = await pulling;
      expect(result.code, result.stderr).toBe(0);
      expect(await skiff.exited(30_000)).toEqual({ code: 0, signal: null });
      expect(skiff.log()).toMatch(/shutdown: every response in flight finished/);
      // containerd checks every blob against its digest: the image is the one pushed, byte for byte.
      expect(await containerd.images()).toContainEqual(expect.objectContaining({ ref, digest: big.manifest.digest }));
      const content = await containerd.ctr(["content", "ls", "-q"]);
      expect(content.stdout.split("\n")).toEqual(expect.arrayContaining([big.manifest.digest, big.config.digest, big.layers[0]!.digest]));
    } finally {
      await containerd.stop();
    }
  }, 120_000);

  for (const https of [false, true]) {
    test(`a response that would never finish is cut at --shutdown-timeout, and skiff still exits 0 (${https ? "https" : "http"})`, async () => {
      // An upstream that sends the start of a blob and then nothing, for longer than the test.
      const stalled: Server = createServer((req, res) => {
        if (req.url === "/v2/") return void res.writeHead(200, { "Content-Type": "application/json" }).end("{}");
        res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": String(8 * MiB) });
        res.write(Buffer.alloc(256 * 1024, 1));
      });
      await new Promise<void>((resolve) => stalled.listen(0, "127.0.0.1", resolve));
      const tls = https ? await makeTls("shutdown-tls") : undefined;
      const dispatcher = tls && new Agent({ connect: { ca: readFileSync(tls.ca, "utf8") } });
      try {
        const upstream = `http://127.0.0.1:${(stalled.address() as AddressInfo).port}`;
        const skiff = await Skiff.start({ upstream, extraArgs: ["--shutdown-timeout", "2"], runtime, tls });
        const res = await undiciFetch(`${skiff.url}/v2/e2e/stalled/blobs/sha256:${"ab".repeat(32)}`, { dispatcher });
        expect(res.status).toBe(200);
        const reader = res.body!.getReader();
        expect((await reader.read()).done).toBe(false);

        const signalled = Date.now();
        skiff.signal("SIGTERM");
        expect(await skiff.exited(15_000)).toEqual({ code: 0, signal: null });
        const took = Date.now() - signalled;
        expect(took).toBeGreaterThanOrEqual(1_900);
        expect(took).toBeLessThan(10_000);
        expect(skiff.log()).toMatch(/waiting up to 2 s for 1 response\(s\) in flight/);
        expect(skiff.log()).toMatch(/shutdown: cut 1 response\(s\) still in flight after 2 s/);
        // The client sees the answer broken off, never a clean end.
        const rest = (async () => {
          for (let i = 0; i < 10_000; i++) if ((await reader.read()).done) return "ended";
          return "endless";
        })();
        await expect(rest).rejects.toThrow();
      } finally {
        await dispatcher?.destroy();
        stalled.closeAllConnections();
        await new Promise((resolve) => stalled.close(resolve));
      }
    }, 60_000);
  }

  test("a second signal exits at once", async () => {
    const skiff = await Skiff.start({ upstream: slowUpstream(), runtime });
    const res = await fetch(`${skiff.url}/v2/e2e/big/blobs/${big.layers[0]!.digest}`);
    const reader = res.body!.getReader();
    await reader.read();
    skiff.signal("SIGTERM");
    await untilLogged(skiff, /SIGTERM: shutting down/);
    skiff.signal("SIGINT");
    expect(await skiff.exited(5_000)).toEqual({ code: 130, signal: null });
    expect(skiff.log()).toMatch(/SIGINT during shutdown: exiting now/);
    await reader.cancel().catch(() => {});
  }, 60_000);
});

describe("a conversion cut by shutdown", () => {
  const bootstrapPath = "/v2/e2e/small/_skiff/bootstrap/v1";
  let reference: Buffer;

  beforeAll(async () => {
    const fresh = await Skiff.start({ upstream: registry.url });
    try {
      const t = await transfer(`${fresh.url}${bootstrapPath}`, {}, 120_000);
      expect(t.status).toBe(200);
      reference = t.body;
    } finally {
      await fresh.stop();
    }
  }, 120_000);

  /** Asks for the bootstrap until it is made (a conversion in steps answers 202 between them). */
  async function bootstrapOf(skiff: Skiff): Promise<Buffer> {
    for (let i = 0; i < 200; i++) {
      const t = await transfer(`${skiff.url}${bootstrapPath}`, {}, 120_000);
      if (t.status === 200) return t.body;
      expect(t.status, t.body.toString("utf8", 0, 300)).toBe(202);
    }
    throw new Error("no bootstrap after 200 requests");
  }

  test("in one pass: nothing is published, and the next start on the same store converts it to the same bootstrap", async () => {
    const data = join(tempDir("shutdown-cut-one-pass"), "data");
    const first = await Skiff.start({ upstream: slowUpstream(), dataDir: data, extraArgs: ["--convert-wait", "1"] });
    // Answered 202 after a second; the conversion goes on, downloading the layers over the slow link.
    const t = await transfer(`${first.url}${bootstrapPath}`, {}, 60_000);
    expect(t.status).toBe(202);
    expect(await first.metric("skiff_conversions_started_total")).toBeGreaterThan(0);
    expect(await first.metric("skiff_conversions_finished_total")).toBe(0);
    first.signal("SIGTERM");
    expect(await first.exited(30_000)).toEqual({ code: 0, signal: null });
    expect(first.log()).toMatch(/waiting up to 25 s for 0 response\(s\) in flight/);
    expect(published(data)).toEqual([]);

    const second = await Skiff.start({ upstream: registry.url, dataDir: data });
    try {
      expect((await bootstrapOf(second)).equals(reference)).toBe(true);
    } finally {
      await second.stop();
    }
  }, 120_000);

  test("in steps: the steps done are kept, and the next start on the same store goes on from them to the same bootstrap", async () => {
    const data = join(tempDir("shutdown-cut-steps"), "data");
    const stepArgs = ["--convert-step", "1m", "--convert-wait", "1"];
    const first = await Skiff.start({ upstream: registry.url, dataDir: data, extraArgs: stepArgs });
    const checkpoints = () => steps(data).filter((f) => f.endsWith("/checkpoint"));
    for (let i = 0; i < 50 && checkpoints().length === 0; i++) {
      const t = await transfer(`${first.url}${bootstrapPath}`, {}, 60_000);
      expect(t.status).toBe(202);
      await sleep(100);
    }
    expect(checkpoints().length).toBeGreaterThan(0);
    first.signal("SIGTERM");
    expect(await first.exited(30_000)).toEqual({ code: 0, signal: null });
    expect(published(data).filter((f) => f.startsWith("images/"))).toEqual([]);
    expect(published(data).length).toBeLessThan(small.layers.length);

    const second = await Skiff.start({ upstream: registry.url, dataDir: data, extraArgs: stepArgs });
    try {
      expect((await bootstrapOf(second)).equals(reference)).toBe(true);
      // Done: nothing of the steps is left behind.
      expect(steps(data)).toEqual([]);
    } finally {
      await second.stop();
    }
  }, 180_000);
});
