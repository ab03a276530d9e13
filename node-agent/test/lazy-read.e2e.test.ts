// The lazy read path against the real stack: a Distribution registry, skiff in front of it, and
// the agent's bootstrap client, fetcher, cache and reader. Reads must return the original bytes
// and ask skiff for exactly the chunks they need, and only once.
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { MT, OciLayout, Prng, pushImage, tarArchive, type TarEntry } from "../../test/e2e/harness/images.ts";
import { waitFor } from "../../test/e2e/harness/processes.ts";
import { Registry } from "../../test/e2e/harness/registry.ts";
import { diffIdOf, writeImage } from "../../test/e2e/harness/rootfs.ts";
import { parseMetrics, Skiff } from "../../test/e2e/harness/skiff.ts";
import { teardown } from "../../test/e2e/harness/teardown.ts";
import { tempDir } from "../../test/e2e/harness/workdir.ts";
import { fetchBootstrap, fetchLayerBootstrap, type FetchedBootstrap } from "../../src/client/lazy-api.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { ChunkCache } from "../src/chunk-cache.ts";
import { ChunkFetcher } from "../src/chunk-fetcher.ts";
import { DISK_READAHEAD_CHUNKS, LayerGroup, LazyReader, type LazyReaderOptions } from "../src/lazy-reader.ts";
import { RecentChunks } from "../src/recent-chunks.ts";

const K64 = 64 * 1024;
const prng = new Prng("lazy-read");
const SMALL = Buffer.from("a small file read lazily\n");
const BIG = prng.bytes(10 * K64 + 321); // 11 chunks of 64 KiB, random so stored raw
const TEXT = Buffer.from("compressible line of text, again and again\n".repeat(5000));
/**
 * A program of 9 chunks: its header and read-only tables in chunk 0, code in chunks 1–4, read-only
 * data in chunk 5, nothing mapped in 6, writable data in 7 and a section table in 8 (random bytes
 * around an ELF header, so each chunk differs and is stored raw).
 */
const PROGRAM = elfFile(prng.bytes(9 * K64), [
  { offset: 0, size: 0x2000, flags: 4 },
  { offset: K64, size: 4 * K64, flags: 5 },
  { offset: 5 * K64, size: 0x3000, flags: 4 },
  { offset: 7 * K64 + 0x80, size: 0x1000, flags: 6 },
]);

/** `body` with a little-endian ELF64 header and one PT_LOAD program header per segment. */
function elfFile(body: Uint8Array, segments: { offset: number; size: number; flags: number }[]): Buffer {
  const out = Buffer.from(body);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  out.writeUInt16LE(3, 0x10); // ET_DYN
  out.writeBigUInt64LE(64n, 0x20); // e_phoff
  out.writeUInt16LE(56, 0x36);
  out.writeUInt16LE(segments.length, 0x38);
  segments.forEach((seg, i) => {
    const p = 64 + i * 56;
    out.writeUInt32LE(1, p); // PT_LOAD
    out.writeUInt32LE(seg.flags, p + 4);
    out.writeBigUInt64LE(BigInt(seg.offset), p + 8);
    out.writeBigUInt64LE(BigInt(seg.size), p + 32);
  });
  return out;
}

/**
 * A dynamically linked ELF64 object of `chunks` chunks (random bytes around its tables): one
 * read-only PT_LOAD over the whole file, its interpreter's path and string table in chunk 0, and
 * its dynamic section (DT_NEEDED of each of `needed`) in its last chunk.
 */
function dynamicElf(chunks: number, o: { interp?: string; needed: string[] }): Buffer {
  const size = chunks * K64;
  const out = Buffer.from(prng.bytes(size));
  out.fill(0, 0, 0x1000);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1], 0);
  out.writeUInt16LE(3, 0x10); // ET_DYN
  out.writeUInt16LE(62, 0x12); // x86-64
  out.writeBigUInt64LE(64n, 0x20);
  out.writeUInt16LE(56, 0x36);
  const strings = Buffer.from(`\0${o.needed.join("\0")}\0`);
  const dynamicAt = size - 0x400;
  const headers = [
    { type: 1, offset: 0, size }, // PT_LOAD, read-only, mapped at 0
    ...(o.interp ? [{ type: 3, offset: 0x300, size: o.interp.length + 1 }] : []),
    { type: 2, offset: dynamicAt, size: (o.needed.length + 3) * 16 },
  ];
  out.writeUInt16LE(headers.length, 0x38);
  headers.forEach((h, i) => {
    const p = 64 + i * 56;
    out.writeUInt32LE(h.type, p);
    out.writeUInt32LE(4, p + 4);
    out.writeBigUInt64LE(BigInt(h.offset), p + 8);
    out.writeBigUInt64LE(BigInt(h.offset), p + 16);
    out.writeBigUInt64LE(BigInt(h.size), p + 32);
  });
  if (o.interp) out.write(`${o.interp}\0`, 0x300);
  strings.copy(out, 0x400);
  let at = dynamicAt;
  const entry = (tag: number, value: number) => {
    out.writeBigUInt64LE(BigInt(tag), at);
    out.writeBigUInt64LE(BigInt(value), at + 8);
    at += 16;
  };
  let name = 1;
  for (const n of o.needed) {
    entry(1, name); // DT_NEEDED
    name += n.length + 1;
  }
  entry(5, 0x400); // DT_STRTAB
  entry(10, strings.length); // DT_STRSZ
  entry(0, 0);
  return out;
}

/** A program, the libraries it needs (one through merged /usr's /lib link), theirs, and its interpreter. */
const LINKED = {
  "usr/bin/linked": dynamicElf(3, { interp: "/lib64/ld-test.so", needed: ["liba.so", "libb.so", "libmissing.so"] }),
  "usr/lib/x86_64-linux-gnu/liba.so": dynamicElf(2, { needed: ["libc-test.so"] }),
  "usr/lib/libb.so": dynamicElf(2, { needed: [] }),
  "usr/lib/x86_64-linux-gnu/libc-test.so": dynamicElf(2, { needed: ["libd.so"] }),
  "usr/lib/x86_64-linux-gnu/libd.so": dynamicElf(2, { needed: ["libe.so"] }),
  "usr/lib/x86_64-linux-gnu/libe.so": dynamicElf(2, { needed: [] }),
  "usr/lib64/ld-test.so": dynamicElf(2, { needed: [] }),
};

let registry: Registry;
let proxy: Skiff;
let image: FetchedBootstrap;
/** Skiff-Params of the cold edge's first answer. */
let firstParams: string;
let manifestDigest: string;

/** Lazy requests skiff has answered, and body bytes its data route has sent. */
async function served(): Promise<{ lazy: number; dataBytes: number }> {
  const samples = parseMetrics(await proxy.metricsText());
  const sum = (name: string, labels: Record<string, string>) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
  return { lazy: sum("skiff_http_requests_total", { kind: "lazy" }), dataBytes: sum("skiff_chunk_bytes_served_total", { route: "data" }) };
}

async function newReader(cacheDir = tempDir("agent-cache"), options: LazyReaderOptions = {}) {
  const cache = await ChunkCache.open(cacheDir);
  const fetcher = new ChunkFetcher({ proxy: proxy.url, name: "e2e/agent", params: image.params, timeoutMs: 10_000 });
  return { cache, fetcher, reader: new LazyReader(image.bootstrap, cache, fetcher, options) };
}

/** Stored bytes of a file's chunks k..l, as one merged range would fetch them. */
function storedSpan(path: string, k: number, l: number): number {
  const b = image.bootstrap;
  const recs = b.chunks(b.lookup(path)!).slice(k, l + 1);
  return recs.at(-1)!.storedOffset + recs.at(-1)!.storedSize - recs[0]!.storedOffset;
}

beforeAll(async () => {
  registry = await Registry.start({ name: "agent-registry" });
  const layout = new OciLayout(tempDir("agent-layout"));
  const file = (name: string, data: Uint8Array): TarEntry => ({ name, type: "file", data });
  const linked: TarEntry[] = [
    ...["usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64"].map((name): TarEntry => ({ name, type: "dir" })),
    { name: "lib", type: "symlink", linkname: "usr/lib" },
    { name: "lib64", type: "symlink", linkname: "usr/lib64" },
    ...Object.entries(LINKED).map(([name, data]) => file(name, data)),
  ];
  // Last in the layer, so that the other files keep their places: a package's compiled modules.
  const modules: TarEntry[] = [
    { name: "pkg", type: "dir" },
    { name: "pkg/__pycache__", type: "dir" },
    ...["a", "b", "c", "d"].map((m) => file(`pkg/__pycache__/${m}.cpython-313.pyc`, new Uint8Array(Buffer.from(`${m} module `.repeat(300))))),
    file("pkg/__pycache__/notes.txt", new Uint8Array(Buffer.from("notes ".repeat(300)))),
  ];
  const tar = tarArchive([{ name: "etc", type: "dir" }, file("etc/small", SMALL), { name: "data", type: "dir" }, file("data/big", BIG), file("data/text", TEXT), { name: "bin", type: "dir" }, file("bin/program", PROGRAM), ...linked, ...modules]);
  const written = writeImage(layout, "v1", [{ bytes: gzipSync(tar), mediaType: MT.layerGzip, diffId: diffIdOf(tar) }]);
  manifestDigest = written.manifest.digest;
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/agent:v1`);
  proxy = await Skiff.start({ upstream: registry.url });
  // A cold edge answers with its none conversion while it makes deflate-raw (docs/api.md, "None first").
  const ask = () => fetchBootstrap(proxy.url, "e2e/agent", "v1", { chunkSize: "64k", codec: "deflate-raw", timeoutMs: 60_000 });
  firstParams = (await ask()).params;
  image = await waitFor("the edge to serve deflate-raw", async () => {
    const fetched = await ask();
    return fetched.params === "v1-c16-deflate-raw" ? fetched : undefined;
  }, { timeoutMs: 60_000, intervalMs: 50 });
}, 120_000);

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await teardown();
});

describe("lazy read path", () => {
  test("the bootstrap is pinned to the pushed manifest, with the asked parameters once made (a none answer first)", () => {
    expect(image.manifestDigest).toBe(manifestDigest);
    expect(firstParams).toBe("v1-c16-none");
    expect(image.params).toBe("v1-c16-deflate-raw");
    expect(image.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  test("a small file: original bytes, one request for exactly its chunk, then served from the cache", async () => {
    const { reader, cache, fetcher } = await newReader();
    const ino = image.bootstrap.lookup("etc/small")!;
    const before = await served();
    expect(Buffer.from(await reader.read(ino, 0, 4096))).toEqual(SMALL);
    const after = await served();
    expect(after.lazy - before.lazy).toBe(1);
    expect(after.dataBytes - before.dataBytes).toBe(storedSpan("etc/small", 0, 0));
    expect(fetcher.stats).toMatchObject({ requests: 1, chunksFetched: 1, errors: 0 });

    expect(Buffer.from(await reader.read(ino, 2, 5))).toEqual(SMALL.subarray(2, 7));
    expect(await served()).toEqual(after);
    expect(reader.stats.cacheHits).toBe(1);
    await reader.idle(); // written to the cache behind the read
    expect(cache.stats.entries).toBe(1);
  });

  test("a range inside a big file fetches only the chunks it covers, in one merged request", async () => {
    const { reader } = await newReader();
    const ino = image.bootstrap.lookup("data/big")!;
    const before = await served();
    const got = await reader.read(ino, 3 * K64 + 100, 2 * K64);
    expect(Buffer.compare(got, BIG.subarray(3 * K64 + 100, 5 * K64 + 100))).toBe(0);
    const after = await served();
    expect(after.lazy - before.lazy).toBe(1);
    expect(after.dataBytes - before.dataBytes).toBe(storedSpan("data/big", 3, 5));
  });

  test("compressed chunks decode; a sequential reader gets readahead; a second reader shares the cache", async () => {
    const cacheDir = tempDir("agent-cache");
    const first = await newReader(cacheDir);
    const ino = image.bootstrap.lookup("data/text")!;
    expect(image.bootstrap.chunks(ino).some((c) => c.compressed)).toBe(true);
    const parts: Uint8Array[] = [];
    for (let off = 0; off < TEXT.length; off += K64) {
      parts.push(await first.reader.read(ino, off, K64));
      await first.reader.idle();
    }
    expect(Buffer.compare(Buffer.concat(parts), TEXT)).toBe(0);
    expect(first.reader.stats.cacheHits).toBeGreaterThan(0); // readahead landed before the reads

    const second = await newReader(cacheDir); // a restarted agent on the same cache
    const before = await served();
    const all = await second.reader.read(ino, 0, TEXT.length);
    expect(Buffer.compare(all, TEXT)).toBe(0);
    expect(await served()).toEqual(before);
    expect(second.fetcher.stats.requests).toBe(0);
  });

  test("program prefetch: the first read of a program's start also fetches its last chunk and its segments that are not code", async () => {
    const b = image.bootstrap;
    const ino = b.lookup("bin/program")!;
    const hexes = b.chunks(ino).map((c) => Buffer.from(c.digest).toString("hex"));
    const cachedChunks = (cache: ChunkCache) => hexes.flatMap((hex, k) => (cache.has(hex) ? [k] : []));

    const on = await newReader(tempDir("agent-cache"), { programPrefetchBytes: 16 * K64 });
    expect(Buffer.compare(await on.reader.read(ino, 0, 4096), PROGRAM.subarray(0, 4096))).toBe(0);
    await on.reader.idle();
    expect(cachedChunks(on.cache)).toEqual([0, 5, 7, 8]);
    // Once per file: reading the start again fetches nothing more.
    const requests = on.fetcher.stats.requests;
    await on.reader.read(ino, 0, 100);
    await on.reader.idle();
    expect(on.fetcher.stats.requests).toBe(requests);

    // Within its bound: one chunk's worth takes the tail only (8), then stops before the segments.
    const bounded = await newReader(tempDir("agent-cache"), { programPrefetchBytes: K64 });
    await bounded.reader.read(ino, 0, 4096);
    await bounded.reader.idle();
    expect(cachedChunks(bounded.cache)).toEqual([0, 5, 8]);

    // Off (the reader's default), and for a file that is not a program (only its tail, then nothing).
    const off = await newReader();
    await off.reader.read(ino, 0, 4096);
    await off.reader.idle();
    expect(cachedChunks(off.cache)).toEqual([0]);
    const data = await newReader(tempDir("agent-cache"), { programPrefetchBytes: 16 * K64 });
    const bigIno = b.lookup("data/big")!;
    await data.reader.read(bigIno, 0, 100);
    await data.reader.idle();
    const big = b.chunks(bigIno).map((c) => Buffer.from(c.digest).toString("hex"));
    expect(big.flatMap((hex, k) => (data.cache.has(hex) ? [k] : []))).toEqual([0, big.length - 1]);
  });

  test("program prefetch follows libraries: the interpreter and what the program needs, found as the loader would, three levels deep", async () => {
    const b = image.bootstrap;
    const firstChunkCached = (cache: ChunkCache, path: string) => cache.has(Buffer.from(b.chunks(b.lookup(path)!)[0]!.digest).toString("hex"));
    const libraries = Object.keys(LINKED).filter((path) => path !== "usr/bin/linked");
    const cachedLibraries = (cache: ChunkCache) => libraries.filter((path) => firstChunkCached(cache, path));

    const on = await newReader(tempDir("agent-cache"), { programPrefetchBytes: 16 * K64 });
    const linked = b.lookup("usr/bin/linked")!;
    expect(Buffer.compare(await on.reader.read(linked, 0, 4096), LINKED["usr/bin/linked"].subarray(0, 4096))).toBe(0);
    await on.reader.idle();
    // libe.so is a fourth level (linked → liba → libc-test → libd → libe): past the bound.
    expect(cachedLibraries(on.cache).sort()).toEqual(libraries.filter((path) => !path.endsWith("libe.so")).sort());
    // The libraries' own first reads then fetch nothing: their prefetch is done.
    const requests = on.fetcher.stats.requests;
    for (const path of ["usr/lib/libb.so", "usr/lib64/ld-test.so"]) await on.reader.read(b.lookup(path)!, 0, 4096);
    await on.reader.idle();
    expect(on.fetcher.stats.requests).toBe(requests);

    // Off: the program's own chunk only.
    const off = await newReader();
    await off.reader.read(linked, 0, 4096);
    await off.reader.idle();
    expect(cachedLibraries(off.cache)).toEqual([]);
  });

  test("layer by layer (the snapshotter): a program's libraries are found in the image's other layers", async () => {
    // The libraries and merged /usr's links in a lower layer, the program in the one above.
    const dirs = ["usr", "usr/bin", "usr/lib", "usr/lib/x86_64-linux-gnu", "usr/lib64"].map((name): TarEntry => ({ name, type: "dir" }));
    const file = (name: string): TarEntry => ({ name, type: "file", data: LINKED[name as keyof typeof LINKED] });
    const lower = tarArchive([...dirs, { name: "lib", type: "symlink", linkname: "usr/lib" }, { name: "lib64", type: "symlink", linkname: "usr/lib64" }, ...Object.keys(LINKED).filter((n) => n !== "usr/bin/linked").map(file)]);
    const upper = tarArchive([...dirs.slice(0, 2), file("usr/bin/linked")]);
    const layout = new OciLayout(tempDir("agent-layers-layout"));
    writeImage(layout, "layers", [lower, upper].map((tar) => ({ bytes: gzipSync(tar), mediaType: MT.layerGzip, diffId: diffIdOf(tar) })));
    await pushImage(layout, "layers", `${registry.hostPort}/e2e/agent:layers`);
    const ask = () => fetchBootstrap(proxy.url, "e2e/agent", "layers", { chunkSize: "64k", codec: "none", timeoutMs: 60_000 });
    const whole = await ask();
    const cache = await ChunkCache.open(tempDir("agent-cache"));
    const group = new LayerGroup();
    const readers = [];
    for (let i = 0; i < whole.bootstrap.blobCount; i++) {
      const blob = whole.bootstrap.blob(i);
      const layer = await fetchLayerBootstrap(proxy.url, "e2e/agent", blob.layerDigest, whole.params, { dataDigest: toHex(blob.dataDigest), timeoutMs: 10_000 });
      const fetcher = new ChunkFetcher({ proxy: proxy.url, name: "e2e/agent", params: whole.params, timeoutMs: 10_000 });
      readers.push({ layer, reader: new LazyReader(layer, cache, fetcher, { programPrefetchBytes: 16 * K64, layers: group }) });
      group.add(readers.at(-1)!.reader);
    }
    const [below, above] = readers;
    await above!.reader.read(above!.layer.lookup("usr/bin/linked")!, 0, 4096);
    // One layer's prefetch starts work in the other: idle until neither has any left.
    for (let pass = 0; pass < 5; pass++) for (const { reader } of readers) await reader.idle();
    const firstChunk = (path: string) => toHex(below!.layer.chunks(below!.layer.lookup(path)!)[0]!.digest);
    expect(["usr/lib/x86_64-linux-gnu/liba.so", "usr/lib/libb.so", "usr/lib64/ld-test.so", "usr/lib/x86_64-linux-gnu/libd.so"].filter((p) => !cache.has(firstChunk(p)))).toEqual([]);

    // A layer that leaves the group is not asked any more.
    const alone = await ChunkCache.open(tempDir("agent-cache"));
    const lone = new LazyReader(above!.layer, alone, new ChunkFetcher({ proxy: proxy.url, name: "e2e/agent", params: whole.params, timeoutMs: 10_000 }), { programPrefetchBytes: 16 * K64, layers: group });
    group.add(lone);
    group.delete(below!.reader);
    await lone.read(above!.layer.lookup("usr/bin/linked")!, 0, 4096);
    await lone.idle();
    expect(alone.stats.entries).toBeLessThanOrEqual(above!.layer.chunks(above!.layer.lookup("usr/bin/linked")!).length);
  });

  test("with nearbyBytes a miss also fetches, in the background, the chunks stored after it up to that many bytes", async () => {
    const { cache, fetcher, reader } = await newReader(tempDir("agent-cache"), { nearbyBytes: 2 * K64 + 100 });
    const b = image.bootstrap;
    // etc/small is stored first; data/big's chunks (random bytes, stored raw, 64 KiB each) follow it.
    expect(Buffer.compare(await reader.read(b.lookup("etc/small")!, 0, 100), SMALL)).toBe(0);
    await reader.idle();
    const big = b.chunks(b.lookup("data/big")!).map((c) => Buffer.from(c.digest).toString("hex"));
    expect(big.map((hex) => cache.has(hex))).toEqual(big.map((_, k) => k < 2));
    expect(fetcher.stats.requests).toBe(2); // the small file's chunk, then its two neighbours in one range

    // Nearby fetches stop at the first chunk already cached: chunk 5 brings 6 and 7; then 4 brings nothing more.
    const bigIno = b.lookup("data/big")!;
    await reader.read(bigIno, 5 * K64, 10);
    await reader.idle();
    expect(big.map((hex) => cache.has(hex))).toEqual(big.map((_, k) => k < 2 || (k >= 5 && k <= 7)));
    const requests = fetcher.stats.requests;
    await reader.read(bigIno, 4 * K64, 10);
    await reader.idle();
    expect(fetcher.stats.requests).toBe(requests + 1);
    expect(big.map((hex) => cache.has(hex))).toEqual(big.map((_, k) => k < 2 || (k >= 4 && k <= 7)));
  });

  test("sibling prefetch: once two modules of a directory have missed, its other modules are fetched in the background; not while a learned list leads", async () => {
    const b = image.bootstrap;
    const module = (m: string) => b.lookup(`pkg/__pycache__/${m}`)!;
    const cachedOf = (cache: ChunkCache) => ["a", "b", "c", "d"].map((m) => cache.has(Buffer.from(b.chunks(module(`${m}.cpython-313.pyc`))[0]!.digest).toString("hex")));
    const notes = (cache: ChunkCache) => cache.has(Buffer.from(b.chunks(module("notes.txt"))[0]!.digest).toString("hex"));
    // One byte of nearby chunks: nothing but the siblings is fetched beside the reads.
    const { cache, reader } = await newReader(tempDir("agent-cache"), { nearbyBytes: 1 });
    await reader.read(module("a.cpython-313.pyc"), 0, 10);
    await reader.idle();
    expect(cachedOf(cache)).toEqual([true, false, false, false]);
    await reader.read(module("c.cpython-313.pyc"), 0, 10);
    await reader.idle();
    expect(cachedOf(cache)).toEqual([true, true, true, true]);
    expect(notes(cache)).toBe(false); // another kind of file

    // While the list matches the reads, misses are only counted; once it does not, the next one starts the group.
    const led = await newReader(tempDir("agent-cache"), { nearbyBytes: 1 });
    let offTrack = false;
    led.reader.followLearnedList(() => offTrack);
    await led.reader.read(module("a.cpython-313.pyc"), 0, 10);
    await led.reader.read(module("c.cpython-313.pyc"), 0, 10);
    await led.reader.idle();
    expect(cachedOf(led.cache)).toEqual([true, false, true, false]);
    offTrack = true;
    await led.reader.read(module("b.cpython-313.pyc"), 0, 10);
    await led.reader.idle();
    expect(cachedOf(led.cache)).toEqual([true, true, true, true]);
  });

  test("a sequential reader on a warm cache reads each chunk file once, not once per read", async () => {
    const cacheDir = tempDir("agent-cache");
    const warm = await newReader(cacheDir);
    const ino = image.bootstrap.lookup("data/big")!;
    expect(Buffer.compare(await warm.reader.read(ino, 0, BIG.length), BIG)).toBe(0);
    await warm.reader.idle(); // fetched chunks are written to the cache behind the read

    const { cache, fetcher, reader } = await newReader(cacheDir); // a restarted agent: nothing in memory
    const piece = K64 / 4; // smaller than a chunk, as FUSE reads of a big chunk are
    const parts: Uint8Array[] = [];
    for (let off = 0; off < BIG.length; off += piece) {
      parts.push(await reader.read(ino, off, piece));
      await reader.idle();
    }
    expect(Buffer.compare(Buffer.concat(parts), BIG)).toBe(0);
    expect(cache.stats.hits).toBe(image.bootstrap.chunks(ino).length);
    expect(fetcher.stats.requests).toBe(0);
  });

  test("a sequential reader on a warm cache has the next DISK_READAHEAD_CHUNKS chunk files read ahead, beyond the fetch readahead", async () => {
    const cacheDir = tempDir("agent-cache");
    const warm = await newReader(cacheDir);
    const ino = image.bootstrap.lookup("data/big")!;
    expect(Buffer.compare(await warm.reader.read(ino, 0, BIG.length), BIG)).toBe(0);
    await warm.reader.idle();

    const { cache, reader } = await newReader(cacheDir, { readaheadChunks: 2 });
    const chunkCount = image.bootstrap.chunks(ino).length;
    expect(chunkCount).toBeGreaterThan(DISK_READAHEAD_CHUNKS + 2);
    await reader.read(ino, 0, K64);
    await reader.read(ino, K64, K64); // sequential: chunks 2 .. 1 + DISK_READAHEAD_CHUNKS are read ahead
    const expected = 2 + DISK_READAHEAD_CHUNKS;
    for (let i = 0; i < 200 && cache.stats.hits < expected; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50)); // and no more than those
    expect(cache.stats.hits).toBe(expected);
    // Those reads are now served from memory.
    expect(Buffer.compare(await reader.read(ino, 2 * K64, K64), BIG.subarray(2 * K64, 3 * K64))).toBe(0);
    expect(cache.stats.hits).toBe(expected);
  });

  test("reads are handed out as views of the chunks in memory, not copies; read() copies", async () => {
    const { reader } = await newReader();
    const ino = image.bootstrap.lookup("data/big")!;
    const a = await reader.readPieces(ino, 3 * K64 + 10, 100);
    const b = await reader.readPieces(ino, 3 * K64 + 500, 100);
    expect(a.pieces.length).toBe(1);
    expect(Buffer.compare(a.pieces[0]!, BIG.subarray(3 * K64 + 10, 3 * K64 + 110))).toBe(0);
    expect(b.pieces[0]!.buffer).toBe(a.pieces[0]!.buffer);
    expect(b.pieces[0]!.byteOffset - a.pieces[0]!.byteOffset).toBe(490);
    // Across a chunk boundary: a piece of each chunk, not joined.
    const across = await reader.readPieces(ino, 4 * K64 - 50, 100);
    expect(across.pieces.map((p) => p.byteLength)).toEqual([50, 50]);
    expect(Buffer.compare(Buffer.concat(across.pieces), BIG.subarray(4 * K64 - 50, 4 * K64 + 50))).toBe(0);
    for (const r of [a, b, across]) r.release();
    const copied = await reader.read(ino, 3 * K64 + 10, 100);
    expect(Buffer.compare(copied, BIG.subarray(3 * K64 + 10, 3 * K64 + 110))).toBe(0);
    expect(copied.buffer).not.toBe(a.pieces[0]!.buffer);
  });

  test("readers given one RecentChunks (the mounts daemon's layers) share it: what one read is in memory for the other", async () => {
    const recent = new RecentChunks();
    const a = await newReader(tempDir("agent-cache"), { recent });
    const b = await newReader(tempDir("agent-cache"), { recent });
    const ino = image.bootstrap.lookup("data/text")!;
    expect(Buffer.compare(await a.reader.read(ino, 0, TEXT.length), TEXT)).toBe(0);
    await a.reader.idle();
    expect(Buffer.compare(await b.reader.read(ino, 0, TEXT.length), TEXT)).toBe(0);
    expect(b.fetcher.stats.requests).toBe(0);
    expect(b.cache.stats.hits + b.cache.stats.misses).toBe(0);
    expect(b.reader.stats.cacheHits).toBe(image.bootstrap.chunks(ino).length);
  });
});
