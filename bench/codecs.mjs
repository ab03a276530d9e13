// Decompression, compression and hashing throughput on this machine, one run, medians of several
// repetitions. Usage: `npm run bench:codecs` (prints markdown), `npm run bench:codecs -- --write`
// (also replaces the generated part of docs/benchmarks.md). Imports the built code from dist/.
import { nodeGunzip } from "../dist/src/runtime/node-gunzip.js";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Duplex, Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";
import { sha256 as nobleSha256 } from "@noble/hashes/sha2.js";
import { deflateSync, Gunzip, inflateSync } from "fflate";
import { decodeChunk, DEFLATE_LEVEL, encodeChunk } from "../dist/src/format/codec.js";
import { zlibInflateRaw } from "../dist/node-agent/src/zlib-inflate.js";
import { decompressLayer } from "../dist/src/convert/decompress.js";
import { zstdWasmModule } from "../dist/src/runtime/node-zstd.js";
import { zlibUnzstd } from "../dist/src/runtime/zlib-zstd.js";
import { wasmUnzstd } from "../dist/src/runtime/zstd-wasm.js";
import { median, replaceSection } from "./report.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const DOC = path.join(ROOT, "docs/benchmarks.md");
const WRITE = process.argv.includes("--write");
const REPS = 5;
const LAYER_BYTES = 128 * 1024 * 1024;
const SOURCE_CHUNK = 64 * 1024;
const MiB = 1024 * 1024;

// ---- inputs ---------------------------------------------------------------------------------------

/**
 * Layer-like content in 64 KiB stretches: incompressible (compressed files, media) 30%, text 50%,
 * binary tables 20%; `only` keeps one kind.
 */
function mixedContent(size, only) {
  const out = new Uint8Array(size);
  let x = 0x9e3779b9;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const words = "the of usr lib share bin include package version license copyright return const static void int if else for while struct config default path file error".split(" ");
  for (let at = 0; at < size; ) {
    const end = Math.min(size, at + 64 * 1024);
    const roll = next() % 10;
    const kind = only ?? (roll < 3 ? "random" : roll < 8 ? "text" : "table");
    if (kind === "random") {
      for (; at < end; at++) out[at] = next() & 0xff;
    } else if (kind === "text") {
      while (at < end) {
        const line = new TextEncoder().encode(
          Array.from({ length: 3 + (next() % 9) }, () => words[next() % words.length]).join(" ") + ` ${next() % 1000};\n`,
        );
        out.set(line.subarray(0, end - at), at);
        at += Math.min(line.length, end - at);
      }
    } else {
      for (; at < end; at += 4) {
        const v = next() % 4096; // small integers, as in symbol and relocation tables
        out[at] = v & 0xff;
        if (at + 1 < end) out[at + 1] = v >> 8;
      }
    }
  }
  return out;
}

function have(tool) {
  return spawnSync(tool, ["--version"], { stdio: "ignore" }).status === 0;
}

// ---- measuring -------------------------------------------------------------------------------------

/**
 * Times each variant once to warm up, then REPS rounds of all variants in turn (so a load spike
 * from another process hits them alike); returns each one's median MB/s for `bytes` of work.
 */
async function compare(bytes, variants) {
  for (const [, fn] of variants) await fn();
  const times = variants.map(() => []);
  for (let r = 0; r < REPS; r++) {
    for (const [i, [, fn]] of variants.entries()) {
      const t = performance.now();
      await fn();
      times[i].push((performance.now() - t) / 1000);
    }
  }
  return variants.map(([name], i) => [name, bytes / 1e6 / median(times[i])]);
}

function chunksOf(bytes, size) {
  const out = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
}

function webStream(chunks) {
  let i = 0;
  return new ReadableStream({
    pull(controller) {
      if (i < chunks.length) controller.enqueue(chunks[i++]);
      else controller.close();
    },
  });
}

async function drain(stream, hash) {
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.length;
    hash?.update(chunk);
  }
  return n;
}

function expectBytes(n, expected, what) {
  if (n !== expected) throw new Error(`${what} produced ${n} bytes, expected ${expected}`);
}

const fmt = (mbps) => (mbps >= 100 ? mbps.toFixed(0) : mbps.toFixed(1));

// ---- sections --------------------------------------------------------------------------------------

async function gunzipSection(gzFile, total) {
  const gz = fs.readFileSync(gzFile);
  const chunks = chunksOf(new Uint8Array(gz.buffer, gz.byteOffset, gz.length), SOURCE_CHUNK);
  const layerType = "application/vnd.oci.image.layer.v1.tar+gzip";
  const skiff = async (hash, gunzip) => expectBytes(await drain(decompressLayer(webStream(chunks), layerType, { gunzip }), hash), total, "decompressLayer");
  const injected = (factory) => (hash) => skiff(hash, factory);
  const withStream = injected(() => new DecompressionStream("gzip"));
  const withZlib = injected(nodeGunzip);
  const rows = await compare(total, [
    ['DecompressionStream("gzip")', async () => expectBytes(await drain(webStream(chunks).pipeThrough(new DecompressionStream("gzip"))), total, "DecompressionStream")],
    [
      "fflate streaming Gunzip (no CRC-32 check)",
      () => {
        let n = 0;
        const g = new Gunzip((d) => (n += d.length));
        for (const c of chunks) g.push(c);
        g.push(new Uint8Array(0), true);
        expectBytes(n, total, "fflate");
      },
    ],
    [
      "node:zlib createGunzip",
      async () => {
        let n = 0;
        const sink = new Writable({
          write(c, _e, cb) {
            n += c.length;
            cb();
          },
        });
        await pipeline(Readable.from(chunks), zlib.createGunzip(), sink);
        expectBytes(n, total, "zlib");
      },
    ],
    [
      "`gzip -dc` (CLI, reference)",
      () => {
        if (spawnSync("sh", ["-c", `gzip -dc '${gzFile}' > /dev/null`]).status !== 0) throw new Error("gzip -dc failed");
      },
    ],
    ["**skiff `decompressLayer`**, built-in (fflate + CRC-32 check)", () => skiff()],
    ["skiff `decompressLayer`, DecompressionStream injected", () => withStream()],
    ["**skiff `decompressLayer`, strict node:zlib injected** (256 KiB chunks)", () => withZlib()],
    // The converter hashes what it decompresses on the same thread; zlib inflates on the libuv
    // pool, so it overlaps with hashing where fflate cannot.
    ["… built-in + sha256 (node:crypto) of the output", () => skiff(createHash("sha256"))],
    ["… DecompressionStream injected + sha256 of the output", () => withStream(createHash("sha256"))],
    ["… strict node:zlib injected + sha256 of the output", () => withZlib(createHash("sha256"))],
  ]);
  return rows;
}

const ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd";

async function zstdSection(zstFile, total) {
  const zst = fs.readFileSync(zstFile);
  const chunks = chunksOf(new Uint8Array(zst.buffer, zst.byteOffset, zst.length), SOURCE_CHUNK);
  const rows = await compare(total, [
    [
      "skiff `decompressLayer` (fzstd)",
      async () => expectBytes(await drain(decompressLayer(webStream(chunks), ZSTD_LAYER)), total, "fzstd"),
    ],
    [
      "skiff `decompressLayer`, libzstd in WebAssembly (zstddec) injected",
      async () => expectBytes(await drain(decompressLayer(webStream(chunks), ZSTD_LAYER, { unzstd: wasmUnzstd(zstdWasmModule) })), total, "WebAssembly zstd"),
    ],
    // Node 22.15 and later, Deno and workerd have it; this Node may not.
    ...(zlibUnzstd()
      ? [["skiff `decompressLayer`, node:zlib's zstd injected", async () => expectBytes(await drain(decompressLayer(webStream(chunks), ZSTD_LAYER, { unzstd: zlibUnzstd() })), total, "node:zlib zstd")]]
      : []),
    [
      "`zstd -dc` (CLI, reference)",
      () => {
        if (spawnSync("sh", ["-c", `zstd -qdc '${zstFile}' > /dev/null`]).status !== 0) throw new Error("zstd -dc failed");
      },
    ],
  ]);
  return rows;
}

async function inflateDS(stored) {
  const ds = new DecompressionStream("deflate-raw");
  const writer = ds.writable.getWriter();
  void writer.write(stored);
  void writer.close();
  return new Uint8Array(await new Response(ds.readable).arrayBuffer());
}

async function chunkDecodeSection(content) {
  const rows = [];
  // Small sizes too: a layer's small files are a chunk each, and most files are small.
  for (const size of [4 * 1024, 16 * 1024, 64 * 1024, 256 * 1024, MiB, 4 * MiB]) {
    const chunks = chunksOf(content.subarray(0, (size < 64 * 1024 ? 8 : 64) * MiB), size);
    const stored = chunks.map((c) => encodeChunk("deflate-raw", c));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const [ds, ff, skiff, zlibRaw, zlibDefault] = await compare(total, [
      [
        "DecompressionStream",
        async () => {
          for (let i = 0; i < stored.length; i++) expectBytes((await inflateDS(stored[i])).length, chunks[i].length, "DecompressionStream");
        },
      ],
      [
        "inflateSync",
        () => {
          for (let i = 0; i < stored.length; i++) expectBytes(inflateSync(stored[i], { out: new Uint8Array(chunks[i].length) }).length, chunks[i].length, "inflateSync");
        },
      ],
      [
        "decodeChunk",
        async () => {
          for (let i = 0; i < stored.length; i++) expectBytes((await decodeChunk("deflate-raw", stored[i], chunks[i].length)).length, chunks[i].length, "decodeChunk");
        },
      ],
      [
        "decodeChunk + node:zlib",
        async () => {
          for (let i = 0; i < stored.length; i++) expectBytes((await decodeChunk("deflate-raw", stored[i], chunks[i].length, zlibInflateRaw)).length, chunks[i].length, "decodeChunk + node:zlib");
        },
      ],
      [
        // The agent's decoder as it was, with node:zlib's default output buffers (16 KiB, joined at the end).
        "decodeChunk + node:zlib, default output buffers",
        async () => {
          const inflate = (bytes, size) => zlib.inflateRawSync(bytes, { maxOutputLength: size + 1 });
          for (let i = 0; i < stored.length; i++) expectBytes((await decodeChunk("deflate-raw", stored[i], chunks[i].length, inflate)).length, chunks[i].length, "decodeChunk + node:zlib, default output buffers");
        },
      ],
    ]);
    rows.push([`${size / 1024} KiB`, ds[1], ff[1], skiff[1], zlibRaw[1], zlibDefault[1]]);
  }
  return rows;
}

async function encodeSection(content) {
  const sets = {
    mixed: chunksOf(content.subarray(0, 32 * MiB), MiB),
    text: chunksOf(mixedContent(16 * MiB, "text"), MiB),
    random: chunksOf(mixedContent(16 * MiB, "random"), MiB),
  };
  const encoders = [
    ...[1, 6, 9].map((level) => [`fflate deflateSync level ${level}`, (c) => deflateSync(c, { level })]),
    ...[1, 6].map((level) => [`node:zlib deflateRawSync level ${level} (reference)`, (c) => zlib.deflateRawSync(c, { level })]),
  ];
  const rates = {};
  for (const [set, chunks] of Object.entries(sets)) {
    const total = chunks.reduce((n, c) => n + c.length, 0);
    rates[set] = await compare(
      total,
      encoders.map(([name, encode]) => [name, () => chunks.forEach((c) => encode(c))]),
    );
  }
  return encoders.map(([name, encode], i) => {
    // A chunk that does not shrink is stored as it is, as the converter does.
    const stored = (chunks) => chunks.reduce((n, c) => n + Math.min(encode(c).length, c.length), 0) / chunks.reduce((n, c) => n + c.length, 0);
    const pct = (x) => `${(100 * x).toFixed(1)}%`;
    return [name, rates.mixed[i][1], rates.text[i][1], rates.random[i][1], pct(stored(sets.mixed)), pct(stored(sets.text))];
  });
}

async function hashSection(content) {
  const chunks = chunksOf(content.subarray(0, 64 * MiB), MiB);
  const rows = await compare(chunks.length * MiB, [
    ["@noble/hashes sha256", () => chunks.forEach((c) => nobleSha256(c))],
    ['node:crypto createHash("sha256")', () => chunks.forEach((c) => createHash("sha256").update(c).digest())],
    [
      'crypto.subtle.digest("SHA-256") (one-shot, awaited)',
      async () => {
        for (const c of chunks) await crypto.subtle.digest("SHA-256", c);
      },
    ],
  ]);
  return rows;
}

// ---- report ----------------------------------------------------------------------------------------

function table(header, rows) {
  const line = (cells) => `| ${cells.map((c) => (typeof c === "number" ? fmt(c) : c)).join(" | ")} |`;
  return [line(header), line(header.map((h, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)].join("\n");
}

function machine() {
  const cpuinfo = fs.existsSync("/proc/cpuinfo") ? fs.readFileSync("/proc/cpuinfo", "utf8") : "";
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? "unknown CPU";
  return `${model}, ${os.availableParallelism?.() ?? os.cpus().length} cores, Node ${process.version} (${os.platform()} ${os.arch()})`;
}

async function main() {
  if (!have("gzip")) throw new Error("the gzip CLI is needed to make the test layer");
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "skiff-bench-codecs-"));
  try {
    const content = mixedContent(LAYER_BYTES);
    const rawFile = path.join(tmp, "layer.tar");
    fs.writeFileSync(rawFile, content);
    const gzFile = `${rawFile}.gz`;
    execFileSync("sh", ["-c", `gzip -6 -c '${rawFile}' > '${gzFile}'`]);
    const zstFile = `${rawFile}.zst`;
    const withZstd = have("zstd");
    if (withZstd) execFileSync("zstd", ["-q", "-3", rawFile, "-o", zstFile]);
    fs.rmSync(rawFile);
    const gzSize = fs.statSync(gzFile).size;
    const log = (s) => process.stderr.write(`bench:codecs: ${s}\n`);

    log("layer gunzip…");
    const gunzip = await gunzipSection(gzFile, content.length);
    log("layer zstd…");
    const zstd = withZstd ? await zstdSection(zstFile, content.length) : [["zstd CLI not installed", NaN]];
    const zstSize = withZstd ? fs.statSync(zstFile).size : 0;
    log("chunk decode…");
    const decode = await chunkDecodeSection(content);
    log("chunk encode…");
    const encode = await encodeSection(content);
    log("sha256…");
    const hash = await hashSection(content);

    const date = new Date().toISOString().slice(0, 10);
    const mb = (n) => `${(n / 1e6).toFixed(0)} MB`;
    const report = [
      `Measured ${date} on ${machine()} with \`npm run bench:codecs -- --write\`; every figure is the median of ${REPS} rounds (variants interleaved) after a warm-up, in MB/s (10^6 bytes) of uncompressed data.`,
      "",
      `**Layer gunzip.** A ${mb(LAYER_BYTES)} layer of mixed content (30% random, 50% text, 20% binary tables), \`gzip -6\` to ${mb(gzSize)}, fed from memory in ${SOURCE_CHUNK / 1024} KiB chunks.`,
      "",
      table(["implementation", "MB/s"], gunzip),
      "",
      withZstd ? `**Layer zstd.** The same layer, \`zstd -3\` to ${mb(zstSize)}.` : "**Layer zstd.**",
      "",
      table(["implementation", "MB/s"], zstd),
      "",
      `**Chunk decode (deflate-raw).** 64 MiB of the same content (8 MiB for chunks under 64 KiB) cut into chunks, each encoded with fflate level ${DEFLATE_LEVEL}, decoded one at a time.`,
      "",
      table(["chunk size", "DecompressionStream", "fflate inflateSync", "skiff `decodeChunk`", "`decodeChunk` + node:zlib (the agent's)", "`decodeChunk` + node:zlib, default output buffers"], decode),
      "",
      "**Chunk encode (deflate-raw).** 1 MiB chunks: 32 MiB of the mixed layer, 16 MiB of text only, 16 MiB of random bytes. Stored size counts a chunk that does not shrink as stored uncompressed, as the converter does.",
      "",
      table(["encoder", "MB/s mixed", "MB/s text", "MB/s random", "stored, mixed", "stored, text"], encode),
      "",
      "**sha256** of 64 MiB in 1 MiB chunks.",
      "",
      table(["implementation", "MB/s"], hash),
      "",
      conclusions({ gunzip, zstd, decode, encode, hash }),
    ].join("\n");

    process.stdout.write(report + "\n");
    if (WRITE) {
      replaceSection(DOC, "codecs", "Decompression, compression and hashing", report);
      log(`wrote ${path.relative(ROOT, DOC)}`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The defaults in src/convert, with the figures of this run that support them. */
function conclusions({ gunzip, zstd, decode, encode, hash }) {
  const get = (rows, part) => rows.find(([name]) => name.includes(part))?.[1] ?? NaN;
  const x = (a, b) => `${(a / b).toFixed(1)}×`;
  const builtIn = get(gunzip, "built-in (fflate");
  const zlibInjected = get(gunzip, "strict node:zlib injected**");
  const stream = get(gunzip, 'DecompressionStream("gzip")');
  const level = (n) => encode.find(([name]) => name === `fflate deflateSync level ${n}`);
  const [, l1mixed, l1text, , l1stored, l1storedText] = level(1);
  const [, l6mixed, l6text, , l6stored, l6storedText] = level(6);
  const decodeFaster = decode.filter(([, ds, ff]) => ff >= ds).map(([size]) => size);
  const [, , , fflateAt1m, zlibAt1m] = decode.find(([size]) => size === "1024 KiB");
  const [, , , , sizedAt256k, defaultAt256k] = decode.find(([size]) => size === "256 KiB");
  return [
    "**What skiff uses, and why.**",
    "",
    `- *gzip layers*: the built-in decoder is fflate's streaming Gunzip plus skiff's own CRC-32 and size check of every member (fflate checks neither), on every runtime, so a layer is accepted or refused the same way everywhere. Node's DecompressionStream and node:zlib stop quietly at trailing bytes that begin with 0x00 when they come in the same read as the end of the last member, so their verdict would depend on how the network cut the stream. On Node, node:zlib with 256 KiB output chunks and a check that it consumed every input byte is strict and ${x(zlibInjected, builtIn)} faster than the built-in (${fmt(zlibInjected)} vs ${fmt(builtIn)} MB/s; it inflates on the libuv pool, beside the hashing): the runtime entries pass it as the \`gunzip\` option (\`nodeGunzip\`, src/runtime/node-gunzip.ts). DecompressionStream (${fmt(stream)} MB/s) pushes 16 KiB pieces through Node's web-stream adapter and is not worth injecting on Node.`,
    `- *zstd layers*: node:zlib's decoder where the runtime has one (Node 22.15 and later, Deno, workerd: \`zlibUnzstd\`, src/runtime/zlib-zstd.ts${zlibUnzstd() ? `, ${fmt(get(zstd, "node:zlib's zstd"))} MB/s here` : ", not this Node"}), one decoder per frame since it ends at a frame's end; else libzstd's streaming decoder in WebAssembly (zstddec's module, src/runtime/zstd-wasm.ts: ${fmt(get(zstd, "WebAssembly"))} MB/s on the converting thread, ${x(get(zstd, "WebAssembly"), get(zstd, "fzstd"))} fzstd's ${fmt(get(zstd, "fzstd"))}), which Node runs on a worker thread (src/runtime/zstd-thread.ts); fzstd only where neither is given. The CLI, for scale: ${fmt(get(zstd, "zstd -dc"))}. skiff reads every frame header before any decoder does: windows above 128 MiB and dictionary frames are refused, truncation and trailing bytes are named the same way whichever decoder runs, and the synchronous decoders are fed a few blocks at a time so output stays ≤ 1 MiB per step.`,
    `- *Chunk encode*: fflate \`deflateSync\` level ${DEFLATE_LEVEL}, the same bytes on every runtime (a test pins them). Level 1 is ${x(l1mixed, l6mixed)} (mixed) and ${x(l1text, l6text)} (text) faster than level 6, which stores ${l6stored} instead of ${l1stored} of mixed content and ${l6storedText} instead of ${l1storedText} of text. Conversion sits in front of an image's first pull and Workers bill CPU time, while lazy fetching already avoids most transfer, so speed wins.`,
    `- *Chunk decode*: fflate \`inflateSync\` into a buffer of the expected size, as fast as or faster than DecompressionStream one chunk at a time here (at ${decodeFaster.join(", ") || "none of the sizes"} in this run) and steadier under load. DecompressionStream inflates on the libuv pool, so it could only pay off with several chunks decoding at once. The Node agent, which inflates every chunk a cold start reads, injects node:zlib's \`inflateRawSync\` instead (node-agent/src/zlib-inflate.ts): ${x(zlibAt1m, fflateAt1m)} the built-in at 1 MiB chunks (${fmt(zlibAt1m)} vs ${fmt(fflateAt1m)} MB/s). It inflates a chunk larger than 16 KiB into one output buffer of its size, where node:zlib's default is 16 KiB buffers joined at the end: ${x(sizedAt256k, defaultAt256k)} the default at 256 KiB chunks (${fmt(sizedAt256k)} vs ${fmt(defaultAt256k)} MB/s); smaller chunks are inflated as by default.`,
    `- *sha256*: node:crypto on Node (${fmt(get(hash, "node:crypto"))} MB/s). For a whole 1 MiB chunk, \`crypto.subtle.digest\` (${fmt(get(hash, "subtle"))} MB/s) is ${x(get(hash, "subtle"), get(hash, "noble"))} the pure-JS @noble/hashes, which should stay the fallback for incremental hashing only.`,
  ].join("\n");
}

await main();
