// Cutting a layer (src/convert/cut.ts): entries in archive order, each regular file's content after
// its entry in chunks of the chunk size named by their sha256, the expansion limit, buffers given
// back cut into again, and a cut left early cancelling its source.
import { gzipSync } from "node:zlib";
import { describe, expect, it, vi } from "vitest";
import { cutLayer, type CutItem, type CutOptions } from "../../src/convert/cut.ts";
import { LayerFormatError } from "../../src/convert/decompress.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { nodeGunzip } from "../../src/runtime/node-gunzip.ts";
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

async function collect(items: AsyncIterable<CutItem>): Promise<CutItem[]> {
  const out: CutItem[] = [];
  for await (const item of items) out.push("chunk" in item ? { chunk: item.chunk.slice(), hex: item.hex } : item);
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
    const items = await collect(cutLayer(streamOf(layer), options(), nodeHasher, { gunzip }));
    const expected: string[] = [];
    for (const entry of entries) {
      expected.push(`entry ${entry.name}${entry.type === "dir" ? "/" : ""}`);
      const data = entry.data ?? new Uint8Array(0);
      if (entry.type !== "file") continue;
      for (let at = 0; at < data.length; at += CHUNK) expected.push(`chunk ${sha256(data.subarray(at, at + CHUNK))}`);
    }
    const got = items.map((item) => ("entry" in item ? `entry ${item.entry.path}` : "chunk" in item ? `chunk sha256:${item.hex}` : "?"));
    expect(got).toEqual(expected);
    for (const item of items) if ("chunk" in item) expect(`sha256:${item.hex}`).toBe(sha256(item.chunk));
  });

  it("refuses a layer that expands past the limit", async () => {
    await expect(collect(cutLayer(streamOf(layer), options({ maxExpandedBytes: 8 * 1024 }), nodeHasher, { gunzip }))).rejects.toThrow(LayerFormatError);
  });

  it("cuts whole chunks into the buffers it is given back", async () => {
    const spare = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
    const given = new Set(spare.map((b) => b.buffer));
    let reused = 0;
    for await (const item of cutLayer(streamOf(layer), options({ spare }), nodeHasher, { gunzip })) {
      if ("chunk" in item && given.has(item.chunk.buffer as ArrayBuffer)) reused++;
    }
    expect(reused).toBe(2);
  });

  it("cancels its source when left early", async () => {
    let cancelled = false;
    for await (const item of cutLayer(streamOf(layer, () => (cancelled = true)), options(), nodeHasher, { gunzip })) {
      expect("entry" in item).toBe(true);
      break;
    }
    // Back up the decompressor's pipes, a few turns later (within a second).
    await vi.waitFor(() => expect(cancelled).toBe(true));
  });
});
