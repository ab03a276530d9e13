// Bootstraps from a malicious proxy, end to end: the real agent (`skiff mount`, its own process, real
// FUSE) against an in-process proxy that serves a crafted bootstrap or bad data answers. Each case
// is either refused at mount with one clear line and a non-zero exit, or mounts and fails the
// affected reads with EIO within --timeout while the agent stays up and other files read exactly.
// The proxy runs in this process, so the mount is only ever touched asynchronously here.
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { deflateRawSync } from "node:zlib";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import * as L from "../../src/format/layout.ts";
import { Prng } from "../../test/e2e/harness/images.ts";
import { spawnService, stopChild } from "../../test/e2e/harness/processes.ts";
import { REPO_ROOT } from "../../test/e2e/harness/skiff.ts";
import { teardown } from "../../test/e2e/harness/teardown.ts";
import { mountsUnder, tempDir } from "../../test/e2e/harness/workdir.ts";
import { craftImage, digestOf, honest, MaliciousProxy, tamper, type CraftedImage, type DataAnswer, type Fields } from "./malicious-proxy.ts";

const K64 = 64 * 1024;
const prng = new Prng("malicious-bootstrap");
const FILES: Record<string, Uint8Array> = {
  "etc/hello": Buffer.from("hello from a crafted image\n"),
  "etc/zz": Buffer.from("a name to spoil\n"), // "zz" occurs nowhere else in the string table
  "data/big": prng.bytes(3 * K64 + 100), // random: stored raw, four chunks
  "data/text": Buffer.from("a compressible line of text\n".repeat(6000)), // stored deflated
  "data/other": Buffer.from("another small file\n"),
  "sub/deeper/leaf": Buffer.from("leaf\n"),
};
const TIMEOUT_S = 3;
const MiB = 2 ** 20;

let image: CraftedImage;
let proxy: MaliciousProxy;

interface Agent {
  child: ChildProcess;
  mountpoint: string;
  cache: string;
  mounted: boolean;
  status: number | null;
  stderr: string;
  /** The agent's largest resident set so far (VmHWM), in bytes. */
  peak: number;
}

/** `skiff mount` against the proxy: resolves once it has mounted or exited (within 30 s). */
async function startAgent(url = proxy.imageUrl): Promise<Agent> {
  const mountpoint = tempDir("mnt-evil");
  const cache = tempDir("cache-evil");
  const child = spawnService("node", [join(REPO_ROOT, "bin", "skiff.js"), "mount", url, mountpoint, "--cache", cache, "--timeout", String(TIMEOUT_S)], { stdio: ["ignore", "pipe", "pipe"] });
  const agent: Agent = { child, mountpoint, cache, mounted: false, status: null, stderr: "", peak: 0 };
  child.stderr!.on("data", (d) => (agent.stderr += d));
  // VmHWM is a high-water mark: sampling it often enough keeps it up to date until the exit.
  const sampler = setInterval(() => {
    readFile(`/proc/${child.pid}/status`, "utf8").then((s) => (agent.peak = Math.max(agent.peak, Number(/VmHWM:\s+(\d+) kB/.exec(s)?.[1] ?? 0) * 1024)), () => {});
  }, 10);
  child.once("exit", () => clearInterval(sampler));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`mount neither came up nor exited: ${agent.stderr}`)), 30_000);
    child.stdout!.on("data", (d) => {
      if (!String(d).includes("mounted ")) return;
      agent.mounted = true;
      clearTimeout(timer);
      resolve();
    });
    child.once("exit", (code) => {
      agent.status = code;
      clearTimeout(timer);
      resolve();
    });
  });
  return agent;
}

/** The agent refuses the image at mount: exit 1, one line matching `message`, nothing mounted. */
async function expectRefused(message: RegExp): Promise<Agent> {
  const started = Date.now();
  const agent = await startAgent();
  expect(agent.mounted, "the agent mounted it").toBe(false);
  expect(agent.status).toBe(1);
  expect(agent.stderr.trim().split("\n"), agent.stderr).toHaveLength(1);
  expect(agent.stderr).toMatch(message);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(await mountsUnder(agent.mountpoint)).toEqual([]);
  return agent;
}

const read = (agent: Agent, path: string) => readFile(join(agent.mountpoint, path));

/** A read that fails with EIO, within the timeout and a margin for the agent's retries. */
async function expectEio(agent: Agent, path: string, what = path): Promise<void> {
  const started = Date.now();
  await expect(read(agent, path), what).rejects.toMatchObject({ code: "EIO" });
  expect(Date.now() - started, what).toBeLessThan((TIMEOUT_S + 5) * 1000);
}

/** Every file of the image but `except` reads back exactly, and the agent is still running. */
async function expectOthersExact(agent: Agent, except: string[] = []): Promise<void> {
  for (const [path, data] of Object.entries(FILES)) {
    if (except.includes(path)) continue;
    expect(Buffer.compare(await read(agent, path), data), path).toBe(0);
  }
  expect(agent.child.exitCode, agent.stderr).toBeNull();
}

beforeAll(async () => {
  image = craftImage(FILES);
  proxy = await MaliciousProxy.start(image);
});

beforeEach(() => {
  proxy.reset(image);
});

afterAll(async () => {
  await proxy?.close();
  await teardown();
});

const u64 = (f: Fields, at: number, v: bigint) => f.view.setBigUint64(at, v, true);
const u32 = (f: Fields, at: number, v: number) => f.view.setUint32(at, v, true);

// Each crafted bootstrap, with the refusal the agent must print. The proxy signs each one with a
// matching Docker-Content-Digest, as a malicious proxy would.
const REFUSED: [string, (f: Fields, bytes: Uint8Array) => Uint8Array | void, RegExp][] = [
  ["truncated by one byte", (_f, b) => b.subarray(0, b.length - 1), /invalid bootstrap: size \d+ does not match/],
  ["a header announcing 2^32-1 inodes", (f) => u32(f, L.H.inodeCount, 0xffffffff), /invalid bootstrap: size \d+ does not match/],
  ["a chunk starting past the end of its blob", (f) => u64(f, f.chunkOf("data/big", 1) + 40, BigInt(image.blob.length)), /chunk \d+ lies outside its blob/],
  ["a chunk offset near 2^53, so offset + length overflows", (f) => u64(f, f.chunkOf("data/big", 1) + 40, 2n ** 53n - 1n), /lies outside its blob/],
  ["a chunk offset past 2^53", (f) => u64(f, f.chunkOf("data/big", 1) + 40, 2n ** 64n - 1n), /too large/],
  ["a blob claiming 2^64-1 bytes", (f) => u64(f, f.at.blobs + 32, 2n ** 64n - 1n), /too large/],
  ["a chunk of 4 GiB uncompressed", (f) => u32(f, f.chunkOf("data/text") + 52, 0xffffffff), /chunk \d+ has size 4294967295/],
  [
    "a compressed chunk whose stored length is 4 GiB, in a blob claiming 1 PiB",
    (f) => {
      u64(f, f.at.blobs + 32, 2n ** 50n);
      u32(f, f.chunkOf("data/text") + 48, 0xfffffff0);
    },
    /compressed chunk \d+ has stored size 4294967280/,
  ],
  ["a chunk naming blob 1 of 1", (f) => u32(f, f.chunkOf("data/big") + 32, 1), /names blob 1 of 1/],
  ["a file size larger than its chunks", (f) => u64(f, f.inode("data/big") + 16, BigInt(3 * K64 + 101)), /size 196709 != its chunks' 196708/],
  ["a file size of 2^60", (f) => u64(f, f.inode("data/big") + 16, 2n ** 60n), /too large/],
  [
    "a short chunk before a file's last",
    // /data/big's first reference names its last, 100-byte chunk.
    (f) => u32(f, f.at.chunkRefs + f.view.getUint32(f.inode("data/big") + 40, true) * L.CHUNK_REF_SIZE, (f.chunkOf("data/big", 3) - f.at.chunks) / L.CHUNK_RECORD_SIZE),
    /short chunk before its last/,
  ],
  ["a chunk list running past the chunk references", (f) => u32(f, f.inode("data/big") + 44, 1_000_000), /chunks out of range/],
  ["a chunk reference out of range", (f) => u32(f, f.at.chunkRefs, 1_000_000), /names chunk 1000000 of/],
  ["a name with '/'", (f, b) => void (b[f.string("zz") + 1] = 0x2f), /name contains '\/' or NUL/],
  ["a name with NUL", (f, b) => void (b[f.string("zz") + 1] = 0), /name contains '\/' or NUL/],
  ["a name '..'", (f, b) => void b.set([0x2e, 0x2e], f.string("zz")), /is named \. or \.\./],
  ["a name that is not UTF-8", (f, b) => void (b[f.string("zz")] = 0xff), /name is not UTF-8/],
  ["a name pointing outside the string table", (f) => u32(f, f.dirent("/etc/zz"), f.counts.stringsSize), /outside the string table/],
  ["a directory entry pointing back at the root", (f) => u32(f, f.dirent("/sub/deeper") + 8, 0), /points at inode 0/],
  ["a directory entry pointing back at its parent", (f) => u32(f, f.dirent("/sub/deeper/leaf") + 8, f.ino("/sub/deeper")), /points backwards|names but link count/],
  ["a directory entry naming an inode out of range", (f) => u32(f, f.dirent("/etc/hello") + 8, 0x7fffffff), /points at inode 2147483647/],
  ["a directory's entries running past the table", (f) => u32(f, f.inode("/sub") + 44, 1_000), /entries out of range/],
  ["a layer digest that climbs out of the layers path", (f, b) => b.set(Buffer.from("../../../../../../x"), f.string("sha256:")), /blob 0 layer digest .* is not a digest/],
  ["a layer bootstrap served as the image's", (f, b) => void (b[L.H.kind] = L.KIND_LAYER), /a layer bootstrap, expected an image/],
];

describe("a crafted bootstrap is refused at mount with one clear line", () => {
  test.each(REFUSED)("%s", async (_name, edit, message) => {
    proxy.bootstrap = tamper(image.bootstrap, edit);
    await expectRefused(message);
    expect(proxy.requests.filter((u) => !u.includes("/_skiff/bootstrap/"))).toEqual([]); // no data fetched
  });

  test("a body that does not match its Docker-Content-Digest", async () => {
    proxy.digestHeader = digestOf(Buffer.from("something else"));
    await expectRefused(/body does not match Docker-Content-Digest/);
  });

  test("Skiff-Params that disagree with the bootstrap's header", async () => {
    proxy.params = "v1-c20-deflate-raw";
    await expectRefused(/bootstrap parameters do not match Skiff-Params v1-c20-deflate-raw/);
  });

  test("a bootstrap announced as 8 GiB is refused before any of it is read", async () => {
    proxy.bootstrapAnswer = (res) => {
      res.writeHead(200, { "docker-content-digest": digestOf(image.bootstrap), "skiff-manifest-digest": digestOf(image.bootstrap), "skiff-params": image.params, "content-length": 8 * 1024 * MiB });
      res.write(Buffer.alloc(MiB)); // then nothing more: the agent must not wait for the rest
    };
    const agent = await expectRefused(/bootstrap of 8589934592 bytes is larger than the agent accepts/);
    expect(agent.peak).toBeLessThan(200 * MiB);
  });

  test("an endless bootstrap body without a length is cut off at the agent's limit, not buffered", { timeout: 60_000 }, async () => {
    let sent = 0;
    proxy.bootstrapAnswer = (res) => {
      res.writeHead(200, { "docker-content-digest": digestOf(image.bootstrap), "skiff-manifest-digest": digestOf(image.bootstrap), "skiff-params": image.params });
      const piece = Buffer.alloc(4 * MiB, 0x61);
      // Bounded at 2 GiB: far past the limit, yet finite if the agent never hangs up.
      const more = () => {
        while (sent < 2048 * MiB && !res.destroyed) {
          sent += piece.length;
          if (!res.write(piece)) return void res.once("drain", more);
        }
        res.end();
      };
      more();
    };
    const agent = await expectRefused(/bootstrap is larger than the agent accepts/);
    expect(sent).toBeLessThan(1024 * MiB);
    expect(agent.peak).toBeLessThan(600 * MiB);
  });
});

describe("a crafted bootstrap that mounts fails only the affected reads", () => {
  test("a chunk whose digest the served bytes don't match, and one past the real end of the blob: EIO, the rest reads", { timeout: 60_000 }, async () => {
    proxy.bootstrap = tamper(image.bootstrap, (f, b) => {
      b[f.chunkOf("data/other")] = b[f.chunkOf("data/other")]! ^ 0xff; // its digest
      // The blob claims 1 MiB more than the proxy has; a chunk of /etc/zz's moves into that gap.
      u64(f, f.at.blobs + 32, BigInt(image.blob.length + MiB));
      u64(f, f.chunkOf("etc/zz") + 40, BigInt(image.blob.length + 1000));
    });
    const agent = await startAgent();
    expect(agent.mounted, agent.stderr).toBe(true);
    try {
      await expectEio(agent, "data/other");
      await expectEio(agent, "etc/zz");
      expect((await stat(join(agent.mountpoint, "data/other"))).size).toBe(FILES["data/other"]!.length);
      await expectOthersExact(agent, ["data/other", "etc/zz"]);
    } finally {
      await stopChild(agent.child);
    }
  });

  // Answers to `Range: bytes=start-end` that are not that range.
  const BAD_DATA: [string, DataAnswer][] = [
    ["200 with the whole blob", (res, _s, _e, blob) => res.writeHead(200, { "content-length": blob.length }).end(blob)],
    ["206 with a shorter body", (res, s, e, blob) => res.writeHead(206, { "content-range": `bytes ${s}-${e}/${blob.length}` }).end(blob.subarray(s, e))],
    ["206 with a longer body", (res, s, e, blob) => res.writeHead(206, { "content-range": `bytes ${s}-${e}/${blob.length}` }).end(blob.subarray(s, e + 2))],
    ["206 naming another range", (res, s, e, blob) => res.writeHead(206, { "content-range": `bytes ${s + 1}-${e + 1}/${blob.length}` }).end(blob.subarray(s + 1, e + 2))],
    ["206 without Content-Range", (res, s, e, blob) => res.writeHead(206).end(blob.subarray(s, e + 1))],
    ["206 with the right length and other bytes", (res, s, e, blob) => res.writeHead(206, { "content-range": `bytes ${s}-${e}/${blob.length}` }).end(Buffer.alloc(e - s + 1, 7))],
    ["headers, then a body that never comes", (res, s, e, blob) => res.writeHead(206, { "content-range": `bytes ${s}-${e}/${blob.length}`, "content-length": e - s + 1 }).write(blob.subarray(s, s + 1))],
    ["no answer at all", () => {}],
  ];

  test("data answers that are not the asked range: EIO within --timeout each, nothing cached, then exact bytes", { timeout: 120_000 }, async () => {
    const agent = await startAgent();
    expect(agent.mounted, agent.stderr).toBe(true);
    try {
      for (const [name, answer] of BAD_DATA) {
        proxy.data = answer;
        await expectEio(agent, "data/big", name);
        await expectEio(agent, "data/text", name);
      }
      expect((await readdir(agent.cache)).filter((f) => !f.startsWith("."))).toEqual([]);
      proxy.data = honest;
      // The last answers stalled past --timeout: reads right after a failed try fail at once (the
      // timeout bounds the fault, chunk-fetcher.ts), so the first honest read comes a moment later.
      await new Promise((r) => setTimeout(r, 300));
      await expectOthersExact(agent);
    } finally {
      await stopChild(agent.child);
    }
  });

  test("a deflate bomb in a 16 MiB chunk: EIO, and the agent never inflates more than the chunk", { timeout: 60_000 }, async () => {
    // One 16 MiB chunk whose stored bytes inflate to 256 MiB (about 250 KiB of deflate).
    const big = craftImage({ ...FILES, bomb: Buffer.alloc(16 * MiB) }, 24);
    const bomb = deflateRawSync(Buffer.alloc(256 * MiB));
    proxy.reset(big);
    proxy.blob = Buffer.concat([big.blob, bomb]);
    proxy.bootstrap = tamper(big.bootstrap, (f) => {
      u64(f, f.at.blobs + 32, BigInt(proxy.blob.length));
      const c = f.chunkOf("bomb");
      u32(f, c + 36, L.CHUNK_COMPRESSED);
      u64(f, c + 40, BigInt(big.blob.length));
      u32(f, c + 48, bomb.length);
    });
    const agent = await startAgent();
    expect(agent.mounted, agent.stderr).toBe(true);
    try {
      await expectEio(agent, "bomb");
      expect(agent.child.exitCode).toBeNull();
      expect(Buffer.compare(await read(agent, "etc/hello"), FILES["etc/hello"]!)).toBe(0);
      await new Promise((r) => setTimeout(r, 50)); // one more VmHWM sample
      expect(agent.peak).toBeGreaterThan(0);
      expect(agent.peak).toBeLessThan(200 * MiB);
    } finally {
      await stopChild(agent.child);
    }
  });

  test("absurd attributes (an mtime of 2^60 s, a 1 MiB xattr) fail no more than their own call, and the agent stays up", { timeout: 60_000 }, async () => {
    const odd = craftImage(FILES, 16, "deflate-raw", (root) => {
      const hello = root.children!.get("etc")!.children!.get("hello")!;
      hello.mtime = 2 ** 60;
      hello.xattrs = new Map([
        ["user.big", new Uint8Array(MiB).fill(0x41)],
        ["user.small", Buffer.from("ok")],
      ]);
    });
    proxy.reset(odd);
    const agent = await startAgent();
    expect(agent.mounted, agent.stderr).toBe(true);
    // Another process asks for the xattrs: getxattr(2) as any program would.
    const getfattr = (name: string) =>
      new Promise<{ status: number | null; out: string }>((resolve) => {
        const c = spawn("getfattr", ["--only-values", "-n", name, join(agent.mountpoint, "etc/hello")], { timeout: 10_000 });
        let out = "";
        c.stdout.on("data", (d) => (out += d));
        c.once("exit", (status) => resolve({ status, out }));
      });
    try {
      expect((await stat(join(agent.mountpoint, "etc/hello"))).size).toBe(FILES["etc/hello"]!.length);
      expect(await getfattr("user.small")).toEqual({ status: 0, out: "ok" });
      expect((await getfattr("user.big")).status).not.toBe(0); // more than Linux's 64 KiB xattr limit
      await expectOthersExact(agent);
    } finally {
      await stopChild(agent.child);
    }
  });
});
