// Cutting a layer (src/convert/cut.ts): entries in archive order, each regular file's content after
// its entry in chunks of the chunk size named by their sha256, the expansion limit, buffers given
// back cut into again, a sink that waits, and a cut stopped by its sink cancelling its source.
import { gzipSync } from "node:zlib";
import { describe, expect, it, vi } from "vitest";
import { cutLayer, type CutOptions, type CutSink } from "../../src/convert/cut.ts";
import { LayerFormatError } from "../../src/convert/decompress.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { nodeGunzip } from "../../src/runtime/node-gunzip.ts";
import type { TarEntry as ParsedEntry } from "../../src/convert/tar.ts";
import { Prng, sha256, tarArchive, type TarEntry } from "../e2e/harness/images.ts";

const CHUNK = 4096;
const GZIP = "application/vnd.oci.image.layer.v1.tar+gzip";
const options = (extra: Partial<CutOptions> = {}): CutOptions => ({ layer: "sha256:test", mediaType: GZIP, chunkSize: CHUNK, maxExpandedBytes: 2 ** 30, ...extra });

/** The bytes in two pieces; with `onCancel`, a source that then never ends, so only a cancel stops it. */
function streamOf(bytes: Uint8Array, onCancel?: () => void): ReadableStream<Uint8Array> {
  let sent = false;
  return new ReadableStream({
    pull(controller) {
      if (sent) return onCancel ? new Promise<void>(() => {}) : controller.close();
      sent = true;
      // In two pieces, so the cut spans reads.
      controller.enqueue(bytes.slice(0, bytes.length >> 1));
      controller.enqueue(bytes.slice(bytes.length >> 1));
    },
    cancel: () => onCancel?.(),
  });
}

type CutItem = { entry: ParsedEntry } | { chunk: Uint8Array; hex: string };

/** Everything cut, chunks copied; `wait` makes every call return a promise settled a turn later. */
async function collect(cut: (sink: CutSink) => Promise<void>, wait = false): Promise<CutItem[]> {
  const out: CutItem[] = [];
  const later = () => (wait ? new Promise<void>((resolve) => setTimeout(resolve, 0)) : undefined);
  await cut({
    entry: (entry) => (out.push({ entry }), later()),
    chunk: (chunk, hex) => (out.push({ chunk: chunk.slice(), hex }), later()),
  });
  return out;
}

const prng = new Prng("cut");
const entries: TarEntry[] = [
  { name: "d", type: "dir" },
  { name: "d/empty", type: "file", data: new Uint8Array(0) },
  { name: "d/small", type: "file", data: prng.bytes(10) },
  { name: "d/link", type: "symlink", linkname: "small" },
  { name: "d/one-short", type: "file", data: prng.bytes(CHUNK - 1) },
  { name: "d/exact", type: "file", data: prng.bytes(CHUNK) },
  { name: "d/three", type: "file", data: prng.bytes(2 * CHUNK + 3) },
];
const layer = new Uint8Array(gzipSync(tarArchive(entries)));

describe.each([
  ["the built-in gunzip", undefined],
  ["node:zlib", nodeGunzip],
] as const)("cutLayer with %s", (_name, gunzip) => {
  it("gives every entry in order, each file's content after it in named chunks of the chunk size", async () => {
    const expected: string[] = [];
    for (const entry of entries) {
      expected.push(`entry ${entry.name}${entry.type === "dir" ? "/" : ""}`);
      const data = entry.data ?? new Uint8Array(0);
      if (entry.type !== "file") continue;
      for (let at = 0; at < data.length; at += CHUNK) expected.push(`chunk ${sha256(data.subarray(at, at + CHUNK))}`);
    }
    // The same whether the sink takes each item at once or waits.
    for (const wait of [false, true]) {
      const items = await collect((sink) => cutLayer(streamOf(layer), options(), nodeHasher, sink, { gunzip }), wait);
      const got = items.map((item) => ("entry" in item ? `entry ${item.entry.path}` : "chunk" in item ? `chunk sha256:${item.hex}` : "?"));
      expect(got).toEqual(expected);
      for (const item of items) if ("chunk" in item) expect(`sha256:${item.hex}`).toBe(sha256(item.chunk));
    }
  });

  it("refuses a layer that expands past the limit", async () => {
    await expect(collect((sink) => cutLayer(streamOf(layer), options({ maxExpandedBytes: 8 * 1024 }), nodeHasher, sink, { gunzip }))).rejects.toThrow(LayerFormatError);
  });

  it("cuts whole chunks into the buffers it is given back", async () => {
    const spare = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
    const given = new Set(spare.map((b) => b.buffer));
    let reused = 0;
    const count = (chunk: Uint8Array) => void (given.has(chunk.buffer as ArrayBuffer) && reused++);
    await cutLayer(streamOf(layer), options({ spare }), nodeHasher, { entry: () => undefined, chunk: count }, { gunzip });
    expect(reused).toBe(2);
  });

  it("reads its source to the end, past the tar's end marker", async () => {
    // What follows the marker does not compress, so it comes in pieces after it: all are read.
    const trailing = new Uint8Array(gzipSync(Buffer.concat([tarArchive(entries), prng.bytes(64 * 1024)])));
    let pulled = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        if (pulled === trailing.length) return c.close();
        const piece = trailing.slice(pulled, pulled + 1024);
        pulled += piece.length;
        c.enqueue(piece);
      },
    }, { highWaterMark: 0 });
    const items = await collect((sink) => cutLayer(source, options(), nodeHasher, sink, { gunzip }));
    expect(items.filter((item) => "entry" in item).length).toBe(entries.length);
    expect(pulled).toBe(trailing.byteLength);
  });

  it("cancels its source when its sink fails", async () => {
    let cancelled = false;
    const boom = new Error("sink failed");
    const failing: CutSink = { entry: () => Promise.reject(boom), chunk: () => undefined };
    await expect(cutLayer(streamOf(layer, () => (cancelled = true)), options(), nodeHasher, failing, { gunzip })).rejects.toBe(boom);
    // Back up the decompressor's pipes, a few turns later (within a second).
    await vi.waitFor(() => expect(cancelled).toBe(true));
  });

  it("passes its source's error through unchanged", async () => {
    const boom = new Error("upstream failed");
    let sent = false;
    const failing = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent) return c.error(boom);
        sent = true;
        c.enqueue(layer.slice(0, layer.length >> 1));
      },
    });
    await expect(collect((sink) => cutLayer(failing, options(), nodeHasher, sink, { gunzip }))).rejects.toBe(boom);
  });
});
