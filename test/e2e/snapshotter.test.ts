// `skiff snapshotter` driven over its gRPC socket the way containerd's metadata layer and unpacker
// drive a proxy snapshotter: ordinary snapshots (prepare, commit, view, labels, filters, usage,
// removal), a layer that the skiff proxy serves lazily (Prepare with the CRI labels answers
// ALREADY_EXISTS and the committed snapshot is found by containerd's List filter), the container's
// overlay over lazy layers with whiteouts and opaque directories read for real, the fallback when the
// proxy can't serve, learned prefetch from one node to the next, a kill -9 of the snapshotter that
// leaves mounts and metadata intact, and kill -9 of the mounts daemon and of the FUSE keeper, both
// when the keeper relays the requests and when the daemon reads them itself (the keeper holding
// copies of its connections).
// The real registry is the upstream; containerd itself drives it in cri-snapshotter.test.ts.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { execFile, execFileSync } from "node:child_process";
import { request as httpRequest } from "node:http";
import { connect as connectTcp, createServer as createNetServer, type AddressInfo, type Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readFile, statfs } from "node:fs/promises";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { credentials, makeGenericClientConstructor, type Client, type ServiceError } from "@grpc/grpc-js";
import { holderFileIn } from "../../node-agent/src/fuse/connection-holder.ts";
import { SNAPSHOTS_SERVICE, type Info, type Mount } from "../../node-agent/src/snapshotter/snapshots-api.ts";
import type { DaemonStatus } from "../../node-agent/src/snapshotter/mounts-client.ts";
import { fetchLearnedReads } from "../../src/client/lazy-api.ts";
import { AGENT_DEFAULT_CODEC } from "../../src/cli/mount.ts";
import { Registry } from "./harness/registry.ts";
import { parseMetrics, Skiff } from "./harness/skiff.ts";
import { SnapshotterProcess } from "./harness/snapshotter.ts";
import { MT, OciLayout, pushImage, sha256, tarArchive, type TarEntry } from "./harness/images.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";
import { waitFor } from "./harness/processes.ts";

const execFileAsync = promisify(execFile);
const TARGET = "containerd.io/snapshot.ref";
const ALREADY_EXISTS = 6;
const NOT_FOUND = 5;
const FAILED_PRECONDITION = 9;

let registry: Registry;
let skiff: Skiff;
let dir: string;
let snapshotter: SnapshotterProcess;
let client: Client;
let bigBytes: Buffer;
// Files no test reads before the kill -9 tests, so that their reads must reach a mounts daemon.
let lateBytes: Buffer[];
let image: { ref: string; manifest: string; layers: { digest: string; diffId: string }[] };

type Call = (method: string, request: object) => Promise<Record<string, unknown>>;
let call: Call;

function connect(): void {
  const Ctor = makeGenericClientConstructor(SNAPSHOTS_SERVICE, "Snapshots");
  client = new Ctor(`unix://${snapshotter.address}`, credentials.createInsecure());
  call = (method, request) =>
    new Promise((resolve, reject) => {
      const c = client as unknown as Record<string, (req: object, cb: (err: ServiceError | null, res: Record<string, unknown>) => void) => void>;
      c[method]!.call(client, request, (err, res) => (err ? reject(err) : resolve(res)));
    });
}

function list(filters: string[] = []): Promise<Info[]> {
  return new Promise((resolve, reject) => {
    const infos: Info[] = [];
    const stream = (client as unknown as { List(req: object): NodeJS.EventEmitter }).List({ filters });
    stream.on("data", (page: { info: Info[] }) => infos.push(...page.info));
    stream.on("end", () => resolve(infos));
    stream.on("error", reject);
  });
}

async function grpcCode(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (err) {
    return (err as ServiceError).code;
  }
  return 0;
}

const mountOverlay = (mounts: Mount[], target: string) => {
  mkdirSync(target, { recursive: true });
  const m = mounts[0]!;
  execFileSync("mount", ["-t", m.type, m.source, "-o", m.options.join(","), target]);
};

/** A layer of a tar archive: gzip'd, with its diff ID. */
function layerOf(layout: OciLayout, entries: TarEntry[]) {
  const tar = tarArchive(entries);
  return { ...layout.writeBlob(gzipSync(tar), MT.layerGzip), diffId: sha256(tar) };
}

beforeAll(async () => {
  registry = await Registry.start({ name: "snapshotter-registry" });
  skiff = await Skiff.start({ upstream: registry.url, extraArgs: ["--convert-wait", "60"] });
  // Two layers: the second deletes a file of the first (whiteout) and replaces a directory (opaque).
  const layout = new OciLayout(tempDir("snapshotter-layout"));
  bigBytes = randomBytes(3 * 2 ** 20);
  lateBytes = [randomBytes(2 ** 21), randomBytes(2 ** 21), randomBytes(2 ** 21)];
  const l0 = layerOf(layout, [
    { name: "etc", type: "dir" },
    { name: "etc/keep", type: "file", data: Buffer.from("kept\n") },
    { name: "etc/gone", type: "file", data: Buffer.from("deleted above\n") },
    { name: "opq", type: "dir" },
    { name: "opq/old", type: "file", data: Buffer.from("hidden by an opaque directory\n") },
  ]);
  const l1 = layerOf(layout, [
    { name: "etc", type: "dir" },
    { name: "etc/.wh.gone", type: "file", data: Buffer.alloc(0) },
    { name: "opq", type: "dir" },
    { name: "opq/.wh..wh..opq", type: "file", data: Buffer.alloc(0) },
    { name: "opq/new", type: "file", data: Buffer.from("new\n") },
    { name: "big.bin", type: "file", data: bigBytes },
    ...lateBytes.map((data, i) => ({ name: `late${i}.bin`, type: "file" as const, data })),
  ]);
  const config = layout.writeBlob(Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [l0.diffId, l1.diffId] } })), MT.config);
  const manifest = layout.writeBlob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config, layers: [l0, l1].map(({ mediaType, digest, size }) => ({ mediaType, digest, size })) })),
    MT.manifest,
  );
  layout.tag("1", manifest);
  const ref = `${registry.hostPort}/e2e/snap:1`;
  await pushImage(layout, "1", ref);
  image = { ref, manifest: manifest.digest, layers: [l0, l1] };
  snapshotter = await SnapshotterProcess.start(skiff.url, ["--timeout", "10"]);
  dir = snapshotter.dir;
  connect();
}, 180_000);

afterAll(async () => {
  client?.close();
  await snapshotter?.stop();
  await skiff?.stop();
  await registry?.stop();
  await teardown();
}, 60_000);

describe("skiff snapshotter over gRPC", () => {
  test("ordinary snapshots: prepare, commit, view, labels, filters, usage, and removal in order", async () => {
    // A crash after a snapshot's directory was made and before its record was written leaves the
    // directory under the id handed out next: the new snapshot must not start with its content.
    const metadataFile = join(dir, "root", "metadata.json");
    const nextId = existsSync(metadataFile) ? JSON.parse(readFileSync(metadataFile, "utf8")).nextId : 1;
    mkdirSync(join(dir, "root", "snapshots", String(nextId), "fs"), { recursive: true });
    writeFileSync(join(dir, "root", "snapshots", String(nextId), "fs", "stale"), "left by a crash\n");
    const prepared = await call("Prepare", { key: "t/1/a", parent: "", labels: { x: "1" } });
    const [bind] = prepared.mounts as Mount[];
    expect(bind!.type).toBe("bind");
    expect(bind!.source).toBe(join(dir, "root", "snapshots", String(nextId), "fs"));
    expect(readdirSync(bind!.source)).toEqual([]);
    writeFileSync(join(bind!.source, "hello"), "hello\n");
    expect(await grpcCode(call("Prepare", { key: "t/1/a", parent: "" }))).toBe(ALREADY_EXISTS);
    expect(await grpcCode(call("Commit", { name: "t/2/base", key: "nope" }))).toBe(NOT_FOUND);
    await call("Commit", { name: "t/2/base", key: "t/1/a", labels: { [TARGET]: "sha256:base" } });
    const stat = (await call("Stat", { key: "t/2/base" })).info as Info;
    expect(stat).toMatchObject({ name: "t/2/base", kind: "COMMITTED", parent: "", labels: { [TARGET]: "sha256:base" } });
    expect(await grpcCode(call("Stat", { key: "t/1/a" }))).toBe(NOT_FOUND);

    const active = (await call("Prepare", { key: "t/3/top", parent: "t/2/base" })).mounts as Mount[];
    expect(active[0]!.type).toBe("overlay");
    expect(active[0]!.options.find((o) => o.startsWith("lowerdir="))).toBe(`lowerdir=${bind!.source}`);
    expect((await call("Mounts", { key: "t/3/top" })).mounts).toEqual(active);
    const view = (await call("View", { key: "t/4/view", parent: "t/2/base" })).mounts as Mount[];
    expect(view).toEqual([{ type: "bind", source: bind!.source, target: "", options: ["ro", "rbind"] }]);
    expect(await grpcCode(call("Mounts", { key: "t/2/base" }))).toBe(FAILED_PRECONDITION);

    const updated = (await call("Update", { info: { name: "t/2/base", labels: { extra: "y" } }, update_mask: { paths: ["labels.extra"] } })).info as Info;
    expect(updated.labels).toEqual({ [TARGET]: "sha256:base", extra: "y" });
    const byLabel = await list([`labels."${TARGET}"==sha256:base,parent==""`]);
    expect(byLabel.map((i) => i.name)).toEqual(["t/2/base"]);
    expect((await list(['kind==active', 'name~="^t/4"'])).map((i) => i.name).sort()).toEqual(["t/3/top", "t/4/view"]);
    const usage = await call("Usage", { key: "t/2/base" });
    expect(Number(usage.inodes)).toBeGreaterThanOrEqual(2);
    expect(Number(usage.size)).toBeGreaterThan(0);

    expect(await grpcCode(call("Remove", { key: "t/2/base" }))).toBe(FAILED_PRECONDITION);
    await call("Remove", { key: "t/3/top" });
    await call("Remove", { key: "t/4/view" });
    await call("Remove", { key: "t/2/base" });
    expect(await list(["name~=^t/"])).toEqual([]);
    // A directory no snapshot owns (a crash between the two) goes at Cleanup.
    mkdirSync(join(dir, "root", "snapshots", "999", "fs"), { recursive: true });
    await call("Cleanup", {});
    expect(readdirSync(join(dir, "root", "snapshots"))).not.toContain("999");
  });

  test("CRI-labelled layers are served lazily: ALREADY_EXISTS, found by containerd's filter, and the container's overlay reads them right", async () => {
    // Once the image's bootstrap is in, both layers' bootstraps are asked for together: the second
    // Prepare finds its own on the way. Counted as the proxy's answered bootstrap GETs.
    const bootstrapsServed = async () => parseMetrics(await skiff.metricsText()).filter((m) => m.name === "skiff_http_requests_total" && m.labels.kind === "lazy" && m.labels.method === "GET" && m.labels.status === "200").reduce((a, m) => a + m.value, 0);
    const before = await bootstrapsServed();
    const top = await prepareLazily(call, list, () => waitFor("both layers' bootstraps before the second Prepare", async () => ((await bootstrapsServed()) >= before + 3 ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 }));
    // Each lazy layer is a FUSE mount of the mounts daemon.
    const fuseMounts = readFileSync("/proc/mounts", "utf8").split("\n").filter((l) => l.includes(join(dir, "root", "snapshots")) && l.includes("fuse"));
    expect(fuseMounts.length).toBe(2);
    // The daemon was started with one malloc arena (its FUSE threads' memory, mounts-client.ts).
    expect(readFileSync(`/proc/${snapshotter.daemonPid()}/environ`, "utf8").split("\0")).toContain(`MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX ?? "1"}`);
    // The unpacker left no extract snapshot behind.
    expect((await list(["name~=extract"])).length).toBe(0);

    const rootfs = join(dir, "rootfs");
    mountOverlay((await call("Prepare", { key: "k8s.io/3/container", parent: top!.name })).mounts as Mount[], rootfs);
    try {
      expect(readFileSync(join(rootfs, "etc/keep"), "utf8")).toBe("kept\n");
      expect(existsSync(join(rootfs, "etc/gone"))).toBe(false);
      expect(readdirSync(join(rootfs, "opq"))).toEqual(["new"]);
      expect(readFileSync(join(rootfs, "big.bin")).equals(bigBytes)).toBe(true);
      writeFileSync(join(rootfs, "etc/written"), "by the container\n");
      expect(readFileSync(join(rootfs, "etc/written"), "utf8")).toBe("by the container\n");
    } finally {
      execFileSync("umount", [rootfs]);
    }
    // Nothing was downloaded whole: the registry served no layer blob to anyone but the proxy's conversion.
    const metrics = await skiff.metricsText();
    expect(metrics).toMatch(/skiff_chunk_bytes_served_total\{route="data"\} [1-9]/);
  });

  test("learned prefetch: the mounts daemon reports what the image's container read first, and on a second node the layers fetch it before any read", async () => {
    // The container of the test before read etc/keep, opq/new and big.bin; 5 s after its last new
    // chunk the daemon reports them.
    const params = await learnedParams();
    const learned = await waitFor("the edge to learn the image's first reads", async () => (await fetchLearnedReads(skiff.url, "e2e/snap", image.manifest, params)) ?? undefined, { timeoutMs: 30_000, intervalMs: 500 });
    expect(learned.length).toBeGreaterThanOrEqual(3);
    // A second node: its own snapshotter, root and chunk cache, the same proxy.
    const other = await SnapshotterProcess.start(skiff.url, ["--timeout", "10"]);
    const otherClient = connectTo(other);
    try {
      const top = await prepareLazily(otherClient.call, otherClient.list);
      const prefetched = await waitFor("the learned chunks to be prefetched", async () => {
        const status = await daemonStatus(other);
        const n = status.mounts.reduce((a, m) => a + m.prefetchedChunks, 0);
        return n >= learned.length ? status : undefined;
      }, { timeoutMs: 30_000, intervalMs: 200 });
      const fetchedBefore = prefetched.mounts.reduce((a, m) => a + m.bytesFetched, 0);
      const rootfs = join(other.dir, "rootfs-learned");
      mountOverlay((await otherClient.call("Prepare", { key: "k8s.io/20/container", parent: top!.name })).mounts as Mount[], rootfs);
      try {
        expect(readFileSync(join(rootfs, "big.bin")).equals(bigBytes)).toBe(true);
        expect(readFileSync(join(rootfs, "etc/keep"), "utf8")).toBe("kept\n");
      } finally {
        execFileSync("umount", [rootfs]);
      }
      // Those reads fetched nothing more: the learned prefetch had brought it all.
      const after = await daemonStatus(other);
      expect(after.mounts.reduce((a, m) => a + m.bytesFetched, 0)).toBe(fetchedBefore);
    } finally {
      otherClient.close();
      await other.stop();
    }
    // SIGTERM to the daemon and the holder of its connections together (a node shutting down):
    // the holder becomes the keeper and unmounts the layers, and both end.
    expect(other.stoppedByKill).toBe(false);
    expect(other.mountsLeftAtStop).toEqual([]);
  }, 120_000);

  test("--fill-layers: once the container's reads pause the rest of its layers is fetched, and the node runs it without the proxy; without it, a read the proxy can't serve fails with EIO", async () => {
    // Two more nodes, each reaching the proxy through a relay the test cuts: a proxy gone for them.
    // The relays run on this thread, so every read through them here is asynchronous.
    const nodes = await Promise.all(
      [["--fill-layers"], []].map(async (extra) => {
        const relay = await cuttableRelay(skiff.url);
        const node = await SnapshotterProcess.start(relay.url, ["--timeout", "3", "--no-learned-prefetch", ...extra]);
        return { relay, node, client: connectTo(node), rootfs: join(node.dir, "rootfs-fill") };
      }),
    );
    const [filled, lazy] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
    try {
      for (const [i, n] of nodes.entries()) {
        const top = await prepareLazily(n.client.call, n.client.list);
        mountOverlay((await n.client.call("Prepare", { key: `k8s.io/3${i}/container`, parent: top.name })).mounts as Mount[], n.rootfs);
        expect(await readFile(join(n.rootfs, "etc/keep"), "utf8")).toBe("kept\n"); // the container's start
      }
      const done = await waitFor("the filling node's layers to be fetched whole", async () => {
        const status = await daemonStatus(filled.node);
        return status.mounts.length === 2 && status.mounts.every((m) => m.prefetchDone) ? status : undefined;
      }, { timeoutMs: 60_000, intervalMs: 250 });
      expect(done.mounts.reduce((a, m) => a + m.prefetchedChunks, 0)).toBeGreaterThan(0);
      const metrics = parseMetrics(await (await fetch(`http://${filled.node.metricsAddress}/metrics`)).text());
      expect(metrics.find((m) => m.name === "skiff_snapshotter_prefetch_done_layers")?.value).toBe(2);
      expect((await daemonStatus(lazy.node)).mounts.every((m) => m.prefetchedChunks === 0)).toBe(true);
      for (const n of nodes) await n.relay.cut();
      // The filling node reads every file from its own cache.
      expect((await readFile(join(filled.rootfs, "big.bin"))).equals(bigBytes)).toBe(true);
      for (const [i, bytes] of lateBytes.entries()) expect((await readFile(join(filled.rootfs, `late${i}.bin`))).equals(bytes)).toBe(true);
      expect(await readFile(join(filled.rootfs, "opq/new"), "utf8")).toBe("new\n");
      // The other fails a read it had not made before, within its --timeout.
      const failed = await readFile(join(lazy.rootfs, "late2.bin")).then(() => undefined, (err: NodeJS.ErrnoException) => err);
      expect(failed?.code).toBe("EIO");
    } finally {
      for (const n of nodes) {
        execFileSync("umount", [n.rootfs]);
        n.client.close();
        await n.node.stop();
        await n.relay.cut();
      }
    }
  }, 120_000);

  test("an image's layers removed: the mounts daemon keeps nothing of the image", async () => {
    const node = await SnapshotterProcess.start(skiff.url, []);
    const c = connectTo(node);
    try {
      const top = await prepareLazily(c.call, c.list);
      const served = await daemonStatus(node);
      expect(served.mounts.length).toBe(2);
      expect(served.images).toEqual({ served: 1, learning: 1 });
      // As containerd removes an image's snapshots: top layer first.
      await c.call("Remove", { key: top.name });
      expect((await daemonStatus(node)).images).toEqual({ served: 1, learning: 1 });
      for (const base of await c.list()) await c.call("Remove", { key: base.name });
      const after = await daemonStatus(node);
      expect(after.mounts).toEqual([]);
      expect(after.images).toEqual({ served: 0, learning: 0 });
    } finally {
      c.close();
      await node.stop();
    }
  }, 60_000);

  test("a layer the proxy can't serve (unknown repository) falls back to an ordinary snapshot", async () => {
    const labels = {
      [TARGET]: "sha256:" + "ab".repeat(32),
      "containerd.io/snapshot/cri.image-ref": `${registry.hostPort}/e2e/missing:1`,
      "containerd.io/snapshot/cri.manifest-digest": "sha256:" + "cd".repeat(32),
      "containerd.io/snapshot/cri.layer-digest": "sha256:" + "ef".repeat(32),
    };
    const res = await call("Prepare", { key: "k8s.io/9/extract-9 x", parent: "", labels });
    expect((res.mounts as Mount[])[0]!.type).toBe("bind");
    await call("Remove", { key: "k8s.io/9/extract-9 x" });
  });

  test("kill -9 of the snapshotter: the lazy mounts keep serving, and a new snapshotter has every snapshot", async () => {
    const before = (await list()).map((i) => i.name).sort();
    const [top] = (await list([`labels."containerd.io/snapshot/cri.layer-digest"==${image.layers[1]!.digest}`]));
    const rootfs = join(dir, "rootfs-kill");
    mountOverlay((await call("Prepare", { key: "k8s.io/4/container", parent: top!.name })).mounts as Mount[], rootfs);
    try {
      client.close();
      await snapshotter.kill();
      // Reads go on while no snapshotter runs: the mounts belong to the mounts daemon.
      expect(readFileSync(join(rootfs, "big.bin")).equals(bigBytes)).toBe(true);
      await snapshotter.restart();
      connect();
      expect((await list()).map((i) => i.name).sort()).toEqual(before.concat("k8s.io/4/container").sort());
      expect(readFileSync(join(rootfs, "etc/keep"), "utf8")).toBe("kept\n");
    } finally {
      execFileSync("umount", [rootfs]);
    }
    await call("Remove", { key: "k8s.io/4/container" });
  });

  test("kill -9 of the mounts daemon while a container reads: the FUSE keeper keeps the mounts up, a new daemon answers what the dead one left, and the read finishes right", async () => {
    const before = lazyMounts();
    expect(before.length).toBe(2);
    await inContainer("k8s.io/5/container", async (rootfs) => {
      await readAcrossDaemonKill(rootfs, 0);
      // The very same mounts (same devices): nothing was mounted again.
      expect(lazyMounts()).toEqual(before);
    });
  });

  test("with no mounts daemon a read fails with EIO within the timeout, never hangs, and the same mount reads again once a daemon is back", async () => {
    const before = lazyMounts();
    const rootfs = await containerOverTop("k8s.io/6/container", "rootfs-no-daemon");
    try {
      // Without the snapshotter nobody starts a new daemon.
      client.close();
      await snapshotter.kill();
      const daemon = snapshotter.daemonPid();
      process.kill(daemon, "SIGKILL");
      await waitFor("the mounts daemon to go", async () => (snapshotter.daemonPid() === 0 ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
      const started = Date.now();
      const failed = await readFile(join(rootfs, "late1.bin")).then(() => undefined, (err: NodeJS.ErrnoException) => err);
      const waited = Date.now() - started;
      expect(failed?.code).toBe("EIO");
      // --timeout 10: EIO from the keeper once the request has waited that long (plus its 250 ms sweep).
      expect(waited).toBeGreaterThan(9_000);
      expect(waited).toBeLessThan(10_000 + 3_000);
      await snapshotter.restart();
      connect();
      await waitFor("a new mounts daemon", async () => (snapshotter.daemonPid() > 0 ? true : undefined), { timeoutMs: 15_000, intervalMs: 100 });
      expect((await readFile(join(rootfs, "late1.bin"))).equals(lateBytes[1]!)).toBe(true);
      expect(lazyMounts()).toEqual(before);
    } finally {
      execFileSync("umount", [rootfs]);
    }
    await call("Remove", { key: "k8s.io/6/container" });
  });

  test("kill -9 of the FUSE keeper that relays: the daemon mounts its layers again and reads them itself, and new containers read them", async () => {
    // The keeper that took over the first daemon's connections relays them to the daemon now.
    const keeper = snapshotter.keeperPid();
    expect(keeper).toBeGreaterThan(0);
    const daemon = snapshotter.daemonPid();
    process.kill(keeper, "SIGKILL");
    // The dead keeper's mounts answered ENOTCONN until they were cleared and mounted again.
    await waitFor("both lazy layers mounted again, a new keeper holding them", async () => {
      const k = snapshotter.keeperPid();
      return (await bothLayersLive()) && k > 0 && k !== keeper ? true : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100 });
    expect(snapshotter.daemonPid()).toBe(daemon);
    await inContainer("k8s.io/7/container", async (rootfs) => {
      expect(readFileSync(join(rootfs, "big.bin")).equals(bigBytes)).toBe(true);
      expect(existsSync(join(rootfs, "etc/gone"))).toBe(false);
    });
  });

  test("a daemon that reads its connections itself: kill -9 of the keeper holding copies changes nothing, and a read the daemon had taken when it was killed is answered by the next one", async () => {
    const before = lazyMounts();
    expect(before.length).toBe(2);
    const daemon = snapshotter.daemonPid();
    // The keeper that holds the daemon's connections now (an older one may still be on its way out).
    const holder = () => Number(readFileSync(holderFileIn(snapshotter.root), "utf8"));
    const keeper = holder();
    expect(keeper).toBeGreaterThan(0);
    process.kill(keeper, "SIGKILL");
    await waitFor("another keeper", async () => {
      const k = holder();
      return k > 0 && k !== keeper && existsSync(`/proc/${k}`) ? true : undefined;
    }, { timeoutMs: 10_000, intervalMs: 100 });
    expect(snapshotter.daemonPid()).toBe(daemon);
    expect(lazyMounts()).toEqual(before);
    await inContainer("k8s.io/8/container", async (rootfs) => {
      // The proxy stopped: the daemon takes the read and waits for its chunks when it is killed.
      // Only the kernel still knows that read; it queues it again for the keeper, which gives it
      // to the next daemon.
      process.kill(skiff.pid, "SIGSTOP");
      let reading: Promise<{ stdout: string }>;
      try {
        reading = execFileAsync("sha256sum", [join(rootfs, "late2.bin")], { timeout: 60_000 });
        await new Promise((r) => setTimeout(r, 500));
        process.kill(daemon, "SIGKILL");
        await waitFor("a new mounts daemon", async () => {
          const d = snapshotter.daemonPid();
          return d > 0 && d !== daemon ? true : undefined;
        }, { timeoutMs: 15_000, intervalMs: 50 });
      } finally {
        process.kill(skiff.pid, "SIGCONT");
      }
      const { stdout } = await reading;
      expect(stdout.split(" ")[0]).toBe(sha256(lateBytes[2]!).slice("sha256:".length));
      expect(lazyMounts()).toEqual(before);
    });
  });
});

// The way on kernels before 6.9 (chosen there by default): the FUSE keeper mounts the layers and
// relays every request to the mounts daemon.
describe("skiff snapshotter --fuse-relay", () => {
  beforeAll(async () => {
    client.close();
    await snapshotter.stop();
    snapshotter = await SnapshotterProcess.start(skiff.url, ["--timeout", "10", "--fuse-relay"]);
    dir = snapshotter.dir;
    connect();
    await prepareLazily(call, list);
  }, 60_000);

  test("the keeper relays: a read the daemon never answered goes to the next daemon after a kill -9", async () => {
    const before = lazyMounts();
    expect(before.length).toBe(2);
    // No daemon reads its connections itself: nothing names a holder.
    expect(existsSync(holderFileIn(snapshotter.root))).toBe(false);
    await inContainer("k8s.io/10/container", async (rootfs) => {
      expect(readFileSync(join(rootfs, "big.bin")).equals(bigBytes)).toBe(true);
      await readAcrossDaemonKill(rootfs, 0);
      expect(lazyMounts()).toEqual(before);
    });
  });

  test("kill -9 of the keeper that mounts: the mounts daemon exits, the snapshotter starts it again, the lazy layers are mounted again, and new containers read them", async () => {
    const keeper = snapshotter.keeperPid();
    expect(keeper).toBeGreaterThan(0);
    const daemon = snapshotter.daemonPid();
    process.kill(keeper, "SIGKILL");
    await waitFor("a new mounts daemon and keeper", async () => {
      const [d, k] = [snapshotter.daemonPid(), snapshotter.keeperPid()];
      return d > 0 && d !== daemon && k > 0 && k !== keeper ? true : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100 });
    await waitFor("both lazy layers mounted again", async () => ((await bothLayersLive()) ? true : undefined), { timeoutMs: 15_000, intervalMs: 100 });
    await inContainer("k8s.io/11/container", async (rootfs) => {
      expect(readFileSync(join(rootfs, "late1.bin")).equals(lateBytes[1]!)).toBe(true);
    });
  });
});

/** The lazy layers' FUSE mounts under the snapshotter's root, from mountinfo (no syscall reaches them). */
function lazyMounts(): { point: string; dev: string }[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" "))
    .filter((f) => f[4]?.startsWith(join(dir, "root", "snapshots")) && f.includes("fuse.skiff"))
    .map((f) => ({ point: f[4]!, dev: f[2]! }))
    .sort((a, b) => a.point.localeCompare(b.point));
}

/** A container's rootfs: an overlay over the image's top lazy layer, mounted at `name`. */
async function containerOverTop(key: string, name: string): Promise<string> {
  const [top] = await list([`labels."containerd.io/snapshot/cri.layer-digest"==${image.layers[1]!.digest}`]);
  const rootfs = join(dir, name);
  mountOverlay((await call("Prepare", { key, parent: top!.name })).mounts as Mount[], rootfs);
  return rootfs;
}

/** `fn` with a container's rootfs over the image's top lazy layer, then unmounted and removed. */
async function inContainer(key: string, fn: (rootfs: string) => Promise<void>): Promise<void> {
  const rootfs = await containerOverTop(key, `rootfs-${key.replace(/\W+/g, "-")}`);
  try {
    await fn(rootfs);
  } finally {
    execFileSync("umount", [rootfs]);
  }
  await call("Remove", { key });
}

/**
 * Reads late file `i` while the mounts daemon is stopped, so that the read waits in the kernel,
 * then kills the daemon: the read must finish right, answered by the next daemon.
 */
async function readAcrossDaemonKill(rootfs: string, i: number): Promise<void> {
  const first = snapshotter.daemonPid();
  expect(first).toBeGreaterThan(0);
  process.kill(first, "SIGSTOP");
  const reading = execFileAsync("sha256sum", [join(rootfs, `late${i}.bin`)], { timeout: 60_000 });
  await new Promise((r) => setTimeout(r, 500));
  process.kill(first, "SIGKILL");
  const { stdout } = await reading;
  expect(stdout.split(" ")[0]).toBe(sha256(lateBytes[i]!).slice("sha256:".length));
  const second = snapshotter.daemonPid();
  expect(second).toBeGreaterThan(0);
  expect(second).not.toBe(first);
}

/** Whether both lazy layers are mounted and answer. */
async function bothLayersLive(): Promise<boolean> {
  const live = await Promise.all(lazyMounts().map((m) => statfs(m.point).then(() => true, () => false)));
  return live.length === 2 && live.every(Boolean);
}

/** The params id the snapshotter's layers were converted with (its default codec, the proxy's chunk size). */
async function learnedParams(): Promise<string> {
  const res = await fetch(`${skiff.url}/v2/e2e/snap/_skiff/bootstrap/${image.manifest}?codec=${AGENT_DEFAULT_CODEC}`);
  await res.arrayBuffer();
  return res.headers.get("skiff-params")!;
}

/** A gRPC client of another snapshotter. */
function connectTo(s: SnapshotterProcess): { call: Call; list: (filters?: string[]) => Promise<Info[]>; close(): void } {
  const Ctor = makeGenericClientConstructor(SNAPSHOTS_SERVICE, "Snapshots");
  const c = new Ctor(`unix://${s.address}`, credentials.createInsecure()) as unknown as Record<string, (req: object, cb: (err: ServiceError | null, res: Record<string, unknown>) => void) => void> & Client;
  return {
    call: (method, request) => new Promise((resolve, reject) => c[method]!.call(c, request, (err, res) => (err ? reject(err) : resolve(res)))),
    list: (filters = []) =>
      new Promise((resolve, reject) => {
        const infos: Info[] = [];
        const stream = (c as unknown as { List(req: object): NodeJS.EventEmitter }).List({ filters });
        stream.on("data", (page: { info: Info[] }) => infos.push(...page.info));
        stream.on("end", () => resolve(infos));
        stream.on("error", reject);
      }),
    close: () => c.close(),
  };
}

/** The mounts daemon's status, from its socket. */
function daemonStatus(s: SnapshotterProcess): Promise<DaemonStatus> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: join(s.root, "mounts.sock"), path: "/status", agent: false, timeout: 10_000 }, (res) => {
      let text = "";
      res.on("data", (d: Buffer) => (text += d.toString()));
      res.on("end", () => resolve(JSON.parse(text) as DaemonStatus));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * containerd's unpacker over the image's two layers with the CRI labels: each Prepare answers
 * ALREADY_EXISTS (served lazily) and the committed snapshot is found by containerd's filter.
 */
async function prepareLazily(call: Call, list: (filters: string[]) => Promise<Info[]>, between?: () => Promise<unknown>): Promise<Info> {
  const [l0, l1] = image.layers;
  const chain0 = l0!.diffId;
  const chain1 = sha256(Buffer.from(`${chain0} ${l1!.diffId}`));
  const labels = (layer: { digest: string }, chain: string, above: string[]) => ({
    [TARGET]: chain,
    "containerd.io/snapshot/cri.image-ref": image.ref,
    "containerd.io/snapshot/cri.manifest-digest": image.manifest,
    "containerd.io/snapshot/cri.layer-digest": layer.digest,
    "containerd.io/snapshot/cri.image-layers": above.join(","),
  });
  expect(await grpcCode(call("Prepare", { key: `k8s.io/1/extract-1 ${chain0}`, parent: "", labels: labels(l0!, chain0, [l0!.digest, l1!.digest]) }))).toBe(ALREADY_EXISTS);
  const [base] = await list([`labels."${TARGET}"==${chain0},parent==""`]);
  expect(base).toMatchObject({ kind: "COMMITTED", parent: "" });
  await between?.();
  expect(await grpcCode(call("Prepare", { key: `k8s.io/2/extract-2 ${chain1}`, parent: base!.name, labels: labels(l1!, chain1, [l1!.digest]) }))).toBe(ALREADY_EXISTS);
  const [top] = await list([`labels."${TARGET}"==${chain1},parent=="${base!.name}"`]);
  expect(top).toMatchObject({ kind: "COMMITTED", parent: base!.name });
  return top!;
}

/** A TCP relay to `target` that the test can cut: the nodes behind it lose their proxy at once. */
async function cuttableRelay(target: string): Promise<{ url: string; cut(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = connectTcp(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => undefined);
      socket.on("close", () => (client.destroy(), upstream.destroy(), sockets.delete(socket)));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cut: async () => {
      for (const socket of sockets) socket.destroy();
      if (server.listening) await new Promise((resolve) => server.close(resolve));
    },
  };
}
