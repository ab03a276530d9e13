// `skiff mount` end to end: a real registry, skiff, and the agent in its own process (the test
// process may then touch the mount synchronously without deadlocking the FUSE server).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, linkSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { OciLayout, MT, pushImage } from "../../test/e2e/harness/images.ts";
import { Registry } from "../../test/e2e/harness/registry.ts";
import { diffIdOf, diffTrees, sh, snapshot, writeImage } from "../../test/e2e/harness/rootfs.ts";
import { freePort, waitFor } from "../../test/e2e/harness/processes.ts";
import { REPO_ROOT, Skiff } from "../../test/e2e/harness/skiff.ts";
import { teardown } from "../../test/e2e/harness/teardown.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { fetchBootstrap } from "../../src/client/lazy-api.ts";
import { tempDir } from "../../test/e2e/harness/workdir.ts";
import { startLinkRelay } from "../../bench/link-relay.mjs";

let registry: Registry;
let skiff: Skiff;
let imageUrl: string;
let oracle: string;
const agents: ChildProcess[] = [];
const mountpoints: string[] = [];

/** Host files a shell needs, copied (not linked) into a staging root. */
function stageShell(root: string): void {
  for (const f of ["bin/dash", "lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2"]) {
    mkdirSync(join(root, f, ".."), { recursive: true });
    copyFileSync(join("/", f), join(root, f));
    chmodSync(join(root, f), 0o755);
  }
  symlinkSync("dash", join(root, "bin", "sh"));
}

function tarLayer(dir: string): { bytes: Uint8Array; mediaType: string; diffId: string } {
  const tar = spawnSync("tar", ["-C", dir, "--sort=name", "--numeric-owner", "-cf", "-", "."], { maxBuffer: 1 << 28 }).stdout;
  return { bytes: gzipSync(tar), mediaType: MT.layerGzip, diffId: diffIdOf(tar) };
}

async function mount(args: string[], url = imageUrl, at?: string): Promise<{ agent: ChildProcess; mountpoint: string }> {
  const mountpoint = at ?? tempDir("mnt");
  if (at === undefined) mountpoints.push(mountpoint);
  const agent = spawn("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", url, mountpoint, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  agents.push(agent);
  let stderr = "";
  agent.stderr!.on("data", (d) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount did not come up: ${stderr}`)), 30_000);
    agent.stdout!.on("data", (d) => {
      if (String(d).includes("mounted ")) {
        clearTimeout(timer);
        resolve();
      }
    });
    agent.once("exit", (code) => reject(new Error(`mount exited ${code}: ${stderr}`)));
  });
  return { agent, mountpoint };
}

async function stop(agent: ChildProcess): Promise<void> {
  if (agent.exitCode !== null || agent.signalCode !== null) return;
  agent.kill("SIGTERM");
  await new Promise((r) => agent.once("exit", r));
}

async function lazyCounters(): Promise<{ requests: number; dataBytes: number }> {
  const text = await skiff.metricsText();
  let requests = 0;
  let dataBytes = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("skiff_http_requests_total{") && line.includes('kind="lazy"')) requests += Number(line.split(" ").pop());
    if (line.startsWith("skiff_chunk_bytes_served_total{")) dataBytes += Number(line.split(" ").pop());
  }
  return { requests, dataBytes };
}

beforeAll(async () => {
  registry = await Registry.start({ name: "mount-registry" });
  skiff = await Skiff.start({ upstream: registry.url });

  const base = tempDir("layer1");
  stageShell(base);
  mkdirSync(join(base, "etc"));
  writeFileSync(join(base, "etc", "msg"), "hello from the lazy image\n");
  writeFileSync(join(base, "etc", "remove-me"), "gone in layer 2\n");
  mkdirSync(join(base, "data"));
  writeFileSync(join(base, "data", "big.bin"), randomBytes(3 * 1024 * 1024 + 123));
  linkSync(join(base, "data", "big.bin"), join(base, "data", "big-link.bin"));
  writeFileSync(join(base, "bin", "suid"), "#!/bin/sh\n");
  chmodSync(join(base, "bin", "suid"), 0o4755);
  mkdirSync(join(base, "dev"));
  sh("mknod", ["-m", "0620", join(base, "dev", "tty9"), "c", "4", "9"]);
  sh("mknod", ["-m", "0660", join(base, "dev", "loop7"), "b", "7", "7"]);
  sh("mkfifo", ["-m", "0600", join(base, "dev", "pipe")]);
  sh("chown", ["1234:5678", join(base, "etc", "msg")]);
  const upper = tempDir("layer2");
  mkdirSync(join(upper, "etc"));
  writeFileSync(join(upper, "etc", ".wh.remove-me"), "");
  writeFileSync(join(upper, "etc", "added"), "from layer 2\n");

  const layers = [tarLayer(base), tarLayer(upper)];
  const layout = new OciLayout(tempDir("mount-layout"));
  writeImage(layout, "v1", layers);
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/rootfs:v1`);
  imageUrl = `${skiff.url}/e2e/rootfs:v1`;
  // The same image in a repository of its own, whose learned reads only the learned-prefetch test makes.
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/learned:v1`);

  // The oracle: GNU tar extracting the layers in order, then the whiteout applied.
  oracle = tempDir("oracle");
  for (const dir of [base, upper]) sh("bash", ["-c", `tar -C ${dir} -cf - . | tar -C ${oracle} -xpf - --numeric-owner`]);
  rmSync(join(oracle, "etc", "remove-me"));
  rmSync(join(oracle, "etc", ".wh.remove-me"));
}, 180_000);

afterAll(async () => {
  for (const a of agents) await stop(a).catch(() => {});
  for (const m of mountpoints) {
    spawnSync("umount", [m]);
    spawnSync("fusermount", ["-uz", m]);
  }
  await skiff?.stop();
  await registry?.stop();
  await teardown();
});

describe("skiff mount", () => {
  test("the mounted image equals GNU tar's extraction of its layers, whiteouts applied", async () => {
    const { agent, mountpoint } = await mount(["--cache", tempDir("cache-a")]);
    try {
      expect(diffTrees(snapshot(oracle), snapshot(mountpoint))).toEqual([]);
    } finally {
      await stop(agent);
    }
    expect(existsSync(join(mountpoint, "etc"))).toBe(false); // unmounted on SIGTERM
  });

  test("--codec and --chunk-size pick the conversion: the tree is the same, the stats name the params; a cold edge's none answer mounts too", async () => {
    // Nothing asked for 64k chunks before: the edge answers with its none conversion while it makes
    // deflate-raw (docs/api.md, "None first"), and the mount reads that one.
    const mountWith = async (params: string) => {
      const stats = join(tempDir("stats"), "stats.json");
      const { agent, mountpoint } = await mount(["--cache", tempDir("cache-codec"), "--stats", stats, "--codec", "deflate-raw", "--chunk-size", "64k"]);
      try {
        expect(diffTrees(snapshot(oracle), snapshot(mountpoint))).toEqual([]);
      } finally {
        await stop(agent);
      }
      expect(JSON.parse(readFileSync(stats, "utf8"))).toMatchObject({ params, errors: 0 });
    };
    await mountWith("v1-c16-none");
    await waitFor("the edge to serve deflate-raw", async () => {
      const fetched = await fetchBootstrap(skiff.url, "e2e/rootfs", "v1", { chunkSize: "64k", codec: "deflate-raw", timeoutMs: 10_000 });
      return fetched.params === "v1-c16-deflate-raw" || undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
    await mountWith("v1-c16-deflate-raw");
    for (const [flag, value] of [["--codec", "zstd"], ["--chunk-size", "3k"]]) {
      const r = spawnSync("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", imageUrl, tempDir("mnt-bad-codec"), flag!, value!], { encoding: "utf8" });
      expect(r.status, flag).toBe(2);
      expect(r.stderr.trim().split("\n"), flag).toHaveLength(1);
      expect(r.stderr, flag).toMatch(flag === "--codec" ? /--codec must be one of none, deflate-raw/ : /chunk size must be a power of two/);
    }
  });

  test("with its chunk cache on a full disk every file still reads exactly, and no half-written chunk is left", async () => {
    // A 512 KiB tmpfs: the 1 MiB chunks of this image can't be kept, small ones only until it fills.
    const disk = tempDir("cache-disk");
    const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", disk], { encoding: "utf8" });
    expect(mounted.status, mounted.stderr).toBe(0);
    try {
      const { agent, mountpoint } = await mount(["--cache", disk]);
      try {
        expect(diffTrees(snapshot(oracle), snapshot(mountpoint))).toEqual([]);
        expect(agent.exitCode).toBeNull();
      } finally {
        await stop(agent);
      }
      // Whatever is in the cache is a whole chunk under its own digest, and no temporary is left.
      const left = (await readdir(disk, { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
      expect(left.length).toBeGreaterThan(0);
      for (const e of left) {
        const bytes = await readFile(join(e.parentPath, e.name));
        expect(toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes))), e.name).toBe(e.name);
      }
    } finally {
      spawnSync("umount", ["-l", disk]);
    }
  });

  test("reading one small file fetches the bootstrap and exactly that file's chunk", async () => {
    const stats = join(tempDir("stats"), "stats.json");
    const before = await lazyCounters();
    // Without learned or nearby prefetch (nearby turns itself on when a loaded machine makes round
    // trips slow): their requests are not what this test counts.
    const { agent, mountpoint } = await mount(["--cache", tempDir("cache-b"), "--stats", stats, "--no-learned-prefetch", "--prefetch-nearby", "0"]);
    try {
      const afterMount = await lazyCounters();
      expect(afterMount.requests - before.requests).toBe(1); // the bootstrap
      expect(readFileSync(join(mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      const afterRead = await lazyCounters();
      expect(afterRead.requests - afterMount.requests).toBe(1); // one range of one data blob
      expect(afterRead.dataBytes - afterMount.dataBytes).toBe("hello from the lazy image\n".length);
    } finally {
      await stop(agent);
    }
    expect(JSON.parse(readFileSync(stats, "utf8"))).toMatchObject({ chunksFetched: 1, requests: 1, errors: 0 });
  });

  test("with --overlay a program runs from the lazy rootfs in a chroot and writes into it", async () => {
    const overlay = tempDir("overlay");
    const { agent, mountpoint } = await mount(["--cache", tempDir("cache-c"), "--overlay", overlay]);
    try {
      // dash alone: its builtins read, list (a glob) and write.
      const script = 'while IFS= read -r l; do echo "$l"; done < /etc/msg; echo /etc/*; echo written > /out.txt';
      const r = spawnSync("chroot", [mountpoint, "/bin/sh", "-c", script], { encoding: "utf8", timeout: 30_000 });
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe("hello from the lazy image\n/etc/added /etc/msg\n");
      expect(readFileSync(join(overlay, "upper", "out.txt"), "utf8")).toBe("written\n");
      expect(existsSync(join(overlay, "lower", "out.txt"))).toBe(false);
    } finally {
      await stop(agent);
    }
  });

  test("learned prefetch: what a mount read first is reported when it stops, and the next mount on an empty cache fetches it first, so that its reads fetch nothing", { timeout: 120_000 }, async () => {
    const url = `${skiff.url}/e2e/learned:v1`;
    const stats = (dir: string) => JSON.parse(readFileSync(join(dir, "stats.json"), "utf8")) as Record<string, unknown>;
    const firstDir = tempDir("learned-1");
    const first = await mount(["--cache", join(firstDir, "cache"), "--stats", join(firstDir, "stats.json")], url);
    const big = readFileSync(join(first.mountpoint, "data", "big.bin"));
    expect(readFileSync(join(first.mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
    await stop(first.agent);
    // Nothing was learned before it: no prefetch; then it reported the 4 chunks of big.bin and msg's one.
    expect(stats(firstDir)).toMatchObject({ learnedChunks: 0, firstReadChunks: 5 });

    const secondDir = tempDir("learned-2");
    const second = await mount(["--cache", join(secondDir, "cache"), "--stats", join(secondDir, "stats.json")], url);
    try {
      await waitFor("the learned prefetch to finish", async () => (stats(secondDir).prefetchDone === true ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
      expect(stats(secondDir)).toMatchObject({ learnedChunks: 5, prefetchedChunks: 5 });
      const before = await lazyCounters();
      expect(readFileSync(join(second.mountpoint, "data", "big.bin")).equals(big)).toBe(true);
      expect(readFileSync(join(second.mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      expect((await lazyCounters()).requests).toBe(before.requests);
    } finally {
      await stop(second.agent);
    }

    // Switched off on the node: nothing learned is fetched.
    const thirdDir = tempDir("learned-3");
    const third = await mount(["--cache", join(thirdDir, "cache"), "--stats", join(thirdDir, "stats.json"), "--no-learned-prefetch"], url);
    await stop(third.agent);
    expect(stats(thirdDir).learnedChunks).toBeUndefined();
    expect(stats(thirdDir).prefetchedChunks).toBeUndefined();
  });

  test("after kill -9 the next mount recovers the mountpoint and reuses the cache", { timeout: 90_000 }, async () => {
    const cache = tempDir("cache-d");
    // Learned and nearby prefetch off (other tests here teach the edge what this image reads, and
    // nearby turns itself on when a loaded machine makes round trips slow): the cache then holds
    // big.bin's chunks and nothing else.
    const first = await mount(["--cache", cache, "--no-learned-prefetch", "--prefetch-nearby", "0"]);
    const big = readFileSync(join(first.mountpoint, "data", "big.bin"));
    // Its 4 chunks are written to the cache just behind the read: killed once they are there.
    await waitFor("big.bin's chunks in the cache", async () => ((await readdir(cache)).filter((f) => !f.startsWith(".")).length >= 4 ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
    first.agent.kill("SIGKILL");
    await new Promise((r) => first.agent.once("exit", r));

    const before = await lazyCounters();
    const agent = spawn("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", imageUrl, first.mountpoint, "--cache", cache, "--no-learned-prefetch"], { stdio: ["ignore", "pipe", "pipe"] });
    agents.push(agent);
    let stderr = "";
    agent.stderr!.on("data", (d) => (stderr += d));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`second mount did not come up: ${stderr}`)), 30_000);
      agent.stdout!.on("data", (d) => String(d).includes("mounted ") && (clearTimeout(timer), resolve()));
    });
    try {
      expect(readFileSync(join(first.mountpoint, "data", "big.bin")).equals(big)).toBe(true);
      const after = await lazyCounters();
      expect(after.requests - before.requests).toBe(1); // the bootstrap only: every chunk came from the cache
    } finally {
      await stop(agent);
    }
  });

  test("kill -9 during fetches, 100 times: after each remount on that cache every read returns the image's bytes", { timeout: 900_000 }, async () => {
    // A 50 Mbit/s link, so that the 3 MiB file takes about half a second and the kill lands while
    // chunks are arriving and being written to the cache.
    const relay = await startLinkRelay({ target: { host: "127.0.0.1", port: Number(new URL(skiff.url).port) }, latencyMs: 1, rateBitsPerSecond: 50e6 });
    const url = `http://127.0.0.1:${relay.port}/e2e/rootfs:v1`;
    const want = readFileSync(join(oracle, "data", "big.bin"));
    let cutMidRead = 0;
    try {
      for (let i = 0; i < 100; i++) {
        const cache = tempDir("cache-kill");
        const first = await mount(["--cache", cache], url);
        const reading = readFile(join(first.mountpoint, "data", "big.bin")).then(
          (got) => (got.equals(want) ? "whole" : "WRONG BYTES"),
          () => "cut",
        );
        await new Promise((r) => setTimeout(r, 20 + ((i * 37) % 400)));
        first.agent.kill("SIGKILL");
        await new Promise((r) => (first.agent.exitCode !== null || first.agent.signalCode !== null ? r(null) : first.agent.once("exit", r)));
        const outcome = await reading;
        expect(outcome, `round ${i}`).not.toBe("WRONG BYTES");
        if (outcome === "cut") cutMidRead++;

        const again = await mount(["--cache", cache], url, first.mountpoint); // recovers the dead mountpoint
        try {
          expect((await readFile(join(again.mountpoint, "data", "big.bin"))).equals(want), `round ${i}`).toBe(true);
          expect(await readFile(join(again.mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
        } finally {
          await stop(again.agent);
        }
      }
    } finally {
      await relay.close();
    }
    expect(cutMidRead).toBeGreaterThan(50); // most kills did land mid-read
  });

  test("with the proxy gone a read fails with EIO within --timeout, the mount survives, and reads work again once it is back", { timeout: 120_000 }, async () => {
    const port = await freePort();
    const data = tempDir("skiff-restart-data");
    const args = { upstream: registry.url, dataDir: data, extraArgs: ["--port", String(port)] };
    let proxy = await Skiff.start(args);
    const { agent, mountpoint } = await mount(["--cache", tempDir("cache-e"), "--timeout", "3"], `${proxy.url}/e2e/rootfs:v1`);
    try {
      await proxy.stop();
      const started = Date.now();
      await expect(readFile(join(mountpoint, "data", "big.bin"))).rejects.toMatchObject({ code: "EIO" });
      expect(Date.now() - started).toBeLessThan(3_000 + 7_000);
      expect((await stat(join(mountpoint, "etc", "msg"))).size).toBe("hello from the lazy image\n".length); // metadata needs no proxy

      proxy = await Skiff.start(args);
      expect(await readFile(join(mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      expect((await readFile(join(mountpoint, "data", "big.bin"))).length).toBe(3 * 1024 * 1024 + 123);
    } finally {
      await stop(agent);
      await proxy.stop();
    }
  });

  test("the proxy killed while sha256sum reads over a slow link: the program gets EIO within --timeout plus a second", { timeout: 120_000 }, async () => {
    // About 5 s to move the 3 MiB file; the kill lands a second in. The kernel splits the program's
    // reads into many FUSE requests and retries failed ones: the bound is the program's, not theirs.
    const port = await freePort();
    const args = { upstream: registry.url, dataDir: tempDir("skiff-kill-read"), extraArgs: ["--port", String(port)] };
    const proxy = await Skiff.start(args);
    const relay = await startLinkRelay({ target: { host: "127.0.0.1", port }, latencyMs: 10, rateBitsPerSecond: 5e6 });
    const timeoutS = 3;
    const { agent, mountpoint } = await mount(["--cache", tempDir("cache-kill-read"), "--timeout", String(timeoutS)], `http://127.0.0.1:${relay.port}/e2e/rootfs:v1`);
    try {
      const reader = spawn("sha256sum", [join(mountpoint, "data", "big.bin")], { stdio: "ignore" });
      const exited = new Promise<number | null>((r) => reader.once("exit", (code) => r(code)));
      await new Promise((r) => setTimeout(r, 1_000));
      expect(reader.exitCode, "sha256sum finished before the kill").toBeNull();
      await proxy.stop();
      relay.cut();
      const killed = Date.now();
      const code = await exited;
      const seconds = (Date.now() - killed) / 1000;
      console.log(`sha256sum: EIO ${seconds.toFixed(1)} s after the proxy was killed (--timeout ${timeoutS})`);
      expect(code).not.toBe(0);
      expect(seconds).toBeLessThan(timeoutS + 1 + 0.5);
    } finally {
      await stop(agent);
      await relay.close();
    }
  });

  test("a proxy answering a corrupted chunk or a 200 instead of a 206 is refused: EIO, nothing cached", { timeout: 120_000 }, async () => {
    // A relay in front of skiff that spoils data answers on demand.
    let spoil: "corrupt" | "whole" | null = "corrupt";
    const relay: Server = createServer(async (req, res) => {
      const upstream = await fetch(`${skiff.url}${req.url}`, { headers: req.headers.range ? { Range: req.headers.range } : {} });
      let body = Buffer.from(await upstream.arrayBuffer());
      let status = upstream.status;
      const headers = relayedHeaders(upstream);
      if (req.url?.endsWith("/data") && spoil === "corrupt") body[0] = body[0]! ^ 0xff;
      if (req.url?.endsWith("/data") && spoil === "whole") {
        const whole = await fetch(`${skiff.url}${req.url}`);
        body = Buffer.from(await whole.arrayBuffer());
        status = 200;
        delete headers["content-range"];
      }
      headers["content-length"] = String(body.length);
      res.writeHead(status, headers);
      res.end(body);
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const relayUrl = `http://127.0.0.1:${(relay.address() as { port: number }).port}`;
    const cache = tempDir("cache-f");
    // Learned and nearby prefetch off: what they would fetch through the relay is not what this test
    // counts (nearby turns itself on when a loaded machine makes round trips slow).
    const { agent, mountpoint } = await mount(["--cache", cache, "--timeout", "5", "--no-learned-prefetch", "--prefetch-nearby", "0"], `${relayUrl}/e2e/rootfs:v1`);
    try {
      for (const mode of ["corrupt", "whole"] as const) {
        spoil = mode;
        await expect(readFile(join(mountpoint, "etc", "msg")), mode).rejects.toMatchObject({ code: "EIO" });
        expect((await readdir(cache)).filter((f) => !f.startsWith(".")), mode).toEqual([]);
      }
      spoil = null;
      expect(await readFile(join(mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      // The chunk is written to the cache just behind the read.
      await waitFor("the chunk in the cache", async () => ((await readdir(cache)).filter((f) => !f.startsWith(".")).length === 1 ? true : undefined), { timeoutMs: 10_000, intervalMs: 50 });
    } finally {
      await stop(agent);
      await new Promise((r) => relay.close(r));
    }
  });

  test("credentials for the proxy go with every request: --token works, none is refused with a one-line error", { timeout: 120_000 }, async () => {
    const seen: (string | undefined)[] = [];
    const guard: Server = createServer(async (req, res) => {
      seen.push(req.headers.authorization);
      if (req.headers.authorization !== "Bearer s3cret") {
        res.writeHead(401, { "content-type": "application/json", "www-authenticate": 'Bearer realm="skiff"' });
        return res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      }
      const upstream = await fetch(`${skiff.url}${req.url}`, { headers: req.headers.range ? { Range: req.headers.range } : {} });
      const body = Buffer.from(await upstream.arrayBuffer());
      const headers = relayedHeaders(upstream);
      headers["content-length"] = String(body.length);
      res.writeHead(upstream.status, headers);
      res.end(body);
    });
    await new Promise<void>((r) => guard.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(guard.address() as { port: number }).port}/e2e/rootfs:v1`;
    try {
      // Asynchronously: the guard answering it runs in this process.
      const refusedAt = tempDir("mnt-refused");
      const refused = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = spawn("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", url, refusedAt, "--cache", tempDir("cache-g"), "--timeout", "5"]);
        let stderr = "";
        child.stderr.on("data", (d) => (stderr += d));
        child.once("exit", (status) => resolve({ status, stderr }));
      });
      expect(refused.status).not.toBe(0);
      expect(refused.stderr.trim().split("\n")).toHaveLength(1);
      expect(refused.stderr).toMatch(/401|UNAUTHORIZED/);
      // The FUSE mount made while the bootstrap was asked for is gone with it.
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(` ${refusedAt} `);

      seen.length = 0;
      const { agent, mountpoint } = await mount(["--cache", tempDir("cache-h"), "--token", "s3cret"], url);
      try {
        expect(await readFile(join(mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      } finally {
        await stop(agent);
      }
      expect(seen.length).toBeGreaterThanOrEqual(2); // the bootstrap and a data range
      expect(new Set(seen)).toEqual(new Set(["Bearer s3cret"]));
    } finally {
      await new Promise((r) => guard.close(r));
    }
  });

  test("with --http-proxy every request goes through that proxy in absolute form, and none around it", { timeout: 120_000 }, async () => {
    // A forward proxy as a dfdaemon peer is one: it gets `GET http://host/path` and fetches it.
    const forwarded: string[] = [];
    const relay: Server = createServer((req, res) => {
      forwarded.push(req.url ?? "");
      if (!req.url?.startsWith("http://")) {
        res.writeHead(400).end("absolute-form requests only");
        return;
      }
      const onward = httpRequest(req.url, { method: req.method, headers: req.headers }, (answer) => {
        res.writeHead(answer.statusCode!, answer.headers);
        answer.pipe(res);
      });
      onward.on("error", () => res.destroy());
      req.pipe(onward);
    });
    await new Promise<void>((r) => relay.listen(0, "127.0.0.1", r));
    const relayUrl = `http://127.0.0.1:${(relay.address() as { port: number }).port}`;
    try {
      const before = await lazyCounters();
      const { agent, mountpoint } = await mount(["--cache", tempDir("cache-i"), "--http-proxy", relayUrl]);
      try {
        // Asynchronously: the relay answering it runs in this process.
        expect(await readFile(join(mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
        expect((await readFile(join(mountpoint, "data", "big.bin"))).equals(readFileSync(join(oracle, "data", "big.bin")))).toBe(true);
      } finally {
        await stop(agent);
      }
      const after = await lazyCounters();
      const lazy = forwarded.filter((u) => u.includes("/_skiff/"));
      expect(forwarded.every((u) => u.startsWith(`${skiff.url}/v2/`))).toBe(true);
      expect(lazy.some((u) => u.includes("/_skiff/bootstrap/"))).toBe(true);
      expect(lazy.some((u) => u.endsWith("/data"))).toBe(true);
      // Every lazy request skiff answered meanwhile came through the relay.
      expect(after.requests - before.requests).toBe(lazy.length);
    } finally {
      await new Promise((r) => relay.close(r));
    }
  });

  /** A relay in front of skiff that logs each data range request and can hold some back. */
  async function dataRelay(hold: (n: number) => boolean = () => false) {
    const requests: { url: string; start: number; end: number }[] = [];
    const held: (() => void)[] = [];
    const server: Server = createServer((req, res) => {
      const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
      const forward = () => {
        const onward = httpRequest(`${skiff.url}${req.url}`, { headers: { ...req.headers, host: new URL(skiff.url).host } }, (answer) => {
          res.writeHead(answer.statusCode!, answer.headers);
          answer.pipe(res);
        });
        onward.on("error", () => res.destroy());
        onward.end();
      };
      if (!req.url?.endsWith("/data") || !range) return forward();
      requests.push({ url: req.url, start: Number(range[1]), end: Number(range[2]) });
      if (hold(requests.length)) held.push(forward);
      else forward();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return {
      url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
      requests,
      held,
      close: () => new Promise((r) => server.close(r)),
    };
  }

  async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 30_000): Promise<void> {
    for (const deadline = Date.now() + ms; !(await ok()); ) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const statsOf = (file: string) => JSON.parse(readFileSync(file, "utf8")) as Record<string, number | boolean>;

  test("--prefetch all never makes a read wait behind prefetch requests, and then fetches everything", { timeout: 120_000 }, async () => {
    let reading = false;
    // Every prefetch request sent before the read is held back until the read is done.
    const relay = await dataRelay(() => !reading);
    const stats = join(tempDir("stats"), "stats.json");
    try {
      // Learned prefetch off: this is about --prefetch all alone.
      const { agent, mountpoint } = await mount(["--cache", tempDir("cache-p"), "--prefetch", "all", "--stats", stats, "--no-learned-prefetch"], `${relay.url}/e2e/rootfs:v1`);
      try {
        await until("prefetch requests to be held", () => relay.held.length === 2); // its two workers, both stuck
        reading = true;
        const read = readFile(join(mountpoint, "etc", "added"), "utf8"); // a layer-2 chunk, not in the held batches
        const late = new Promise((_, reject) => setTimeout(() => reject(new Error("the read waited behind prefetch")), 15_000));
        expect(await Promise.race([read, late])).toBe("from layer 2\n");
        expect(relay.held).toHaveLength(2); // still held: the read did not need them

        for (const release of relay.held.splice(0)) release();
        await until("prefetch to finish", () => statsOf(stats).prefetchDone === true);
        const sent = relay.requests.length;
        expect((await readFile(join(mountpoint, "data", "big.bin"))).equals(readFileSync(join(oracle, "data", "big.bin")))).toBe(true);
        expect(relay.requests.length).toBe(sent); // all of it was prefetched
      } finally {
        await stop(agent);
      }
      expect(statsOf(stats)).toMatchObject({ prefetchDone: true, errors: 0 });
      expect(statsOf(stats).prefetchedChunks).toBeGreaterThan(3);
    } finally {
      await relay.close();
    }
  });

  test("--record writes the chunks reads need in order; --prefetch LIST --prefetch all fetches those before any other", { timeout: 120_000 }, async () => {
    const list = join(tempDir("list"), "app.prefetch");
    const recording = await mount(["--cache", tempDir("cache-r"), "--record", list]);
    try {
      expect(readFileSync(join(recording.mountpoint, "etc", "msg"), "utf8")).toBe("hello from the lazy image\n");
      const big = readFileSync(join(recording.mountpoint, "data", "big.bin"));
      expect(big.subarray(0, 100)).toHaveLength(100);
    } finally {
      await stop(recording.agent);
    }
    const lines = readFileSync(list, "utf8").trim().split("\n");
    expect(lines[0]).toBe("# skiff prefetch list v1");
    const recorded = lines.slice(1);
    expect(recorded.every((l) => /^[0-9a-f]{64}$/.test(l))).toBe(true);

    // Which chunks each data range covers, from the image's own bootstrap (the agent's default codec's).
    const { bootstrap } = await fetchBootstrap(skiff.url, "e2e/rootfs", "v1", { codec: "deflate-raw", timeoutMs: 30_000 });
    const chunks = Array.from({ length: bootstrap.chunkCount }, (_, i) => bootstrap.chunk(i));
    const msg = bootstrap.chunks(bootstrap.lookup("/etc/msg")!)[0]!;
    expect(recorded[0]).toBe(toHex(msg.digest)); // read first
    expect(recorded).toHaveLength(1 + bootstrap.chunks(bootstrap.lookup("/data/big.bin")!).length);
    const covered = (r: { url: string; start: number; end: number }) =>
      chunks.filter((c) => r.url.includes(bootstrap.blob(c.blob).layerDigest) && c.storedOffset >= r.start && c.storedOffset + c.storedSize - 1 <= r.end).map((c) => toHex(c.digest));

    const relay = await dataRelay();
    const stats = join(tempDir("stats"), "stats.json");
    try {
      // Learned prefetch off: a learned list would run before the given one.
      const replay = await mount(["--cache", tempDir("cache-s"), "--prefetch", list, "--prefetch", "all", "--stats", stats, "--no-learned-prefetch"], `${relay.url}/e2e/rootfs:v1`);
      try {
        await until("prefetch to finish", () => statsOf(stats).prefetchDone === true);
      } finally {
        await stop(replay.agent);
      }
      const wanted = new Set(recorded);
      const firstOther = relay.requests.findIndex((r) => covered(r).some((hex) => !wanted.has(hex)));
      const lastWanted = relay.requests.findLastIndex((r) => covered(r).some((hex) => wanted.has(hex)));
      expect(firstOther).toBeGreaterThan(lastWanted);
      expect(new Set(relay.requests.slice(0, firstOther).flatMap(covered))).toEqual(wanted);
      expect(new Set(relay.requests.flatMap(covered))).toEqual(new Set(chunks.map((c) => toHex(c.digest))));
    } finally {
      await relay.close();
    }
  });

  test("skiff record runs a command in a chroot over the lazy image and writes what it read as a prefetch list", { timeout: 120_000 }, async () => {
    const list = join(tempDir("list"), "sh.prefetch");
    const script = 'while IFS= read -r l; do echo "$l"; done < /etc/msg; exit 3';
    const r = spawnSync("node", [join(REPO_ROOT, "bin", "skiff.js"), "record", imageUrl, "--output", list, "--cache", tempDir("cache-u"), "--", "/bin/sh", "-c", script], { encoding: "utf8", timeout: 60_000 });
    expect(r.status, r.stderr).toBe(3); // the command's own status
    expect(r.stdout).toBe("hello from the lazy image\n");
    const { bootstrap } = await fetchBootstrap(skiff.url, "e2e/rootfs", "v1", { timeoutMs: 30_000 });
    const hexOf = (path: string) => bootstrap.chunks(bootstrap.lookup(path)!).map((c) => toHex(c.digest));
    const recorded = readFileSync(list, "utf8").trim().split("\n");
    expect(recorded[0]).toBe("# skiff prefetch list v1");
    // The shell and its loader were read before the file the script reads.
    const msgAt = recorded.indexOf(hexOf("/etc/msg")[0]!);
    for (const path of ["/bin/dash", "/lib64/ld-linux-x86-64.so.2"]) {
      const at = recorded.indexOf(hexOf(path)[0]!);
      expect(at, path).toBeGreaterThan(0);
      expect(at, path).toBeLessThan(msgAt);
    }
  });

  test("a prefetch list that is not one is refused with a one-line error", () => {
    const bad = join(tempDir("list"), "not-a-list");
    writeFileSync(bad, "hello\n");
    const r = spawnSync("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", imageUrl, tempDir("mnt-bad-list"), "--cache", tempDir("cache-t"), "--prefetch", bad], { encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/not a skiff prefetch list/);
  });

  test("--http-proxy that is not an http(s) URL is refused with a one-line error", () => {
    const r = spawnSync("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", imageUrl, tempDir("mnt-bad-proxy"), "--http-proxy", "socks://x"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/--http-proxy/);
  });
});

/** An answer's headers as a test relay passes them on: fetch inflated a gzipped body, so not its Content-Encoding. */
function relayedHeaders(upstream: Response): Record<string, string> {
  const headers: Record<string, string> = {};
  upstream.headers.forEach((v, k) => (headers[k] = v));
  delete headers["content-encoding"];
  return headers;
}
