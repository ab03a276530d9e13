// The zstd worker thread ending in the middle of a layer (killed, out of memory, a crash): every
// session on it fails with an error instead of waiting forever, and the next layer gets a new
// worker. The worker is the real one; the test only keeps a handle on it to end it.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import type { Worker as NodeWorker } from "node:worker_threads";
import zlib from "node:zlib";
import { describe, expect, it, vi } from "vitest";
import { decompressLayer } from "../../src/convert/decompress.ts";
import { zstdWasmModule } from "../../src/runtime/node-zstd.ts";
import { threadUnzstd } from "../../src/runtime/zstd-thread.ts";

const started: NodeWorker[] = [];
vi.mock("node:worker_threads", async (original) => {
  const real = await original<typeof import("node:worker_threads")>();
  class KeptWorker extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args);
      started.push(this);
    }
  }
  return { ...real, Worker: KeptWorker };
});

const OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd";
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Content that compresses but is not all alike: counting bytes with some noise. */
function content(size: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = 7;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = (i >> 8) + ((x >>> 28) & 3);
  }
  return out;
}

function streamOf(bytes: Uint8Array, piece = 65536): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at + piece));
      at += piece;
    },
  });
}

/** node:zlib's zstd encoder where this Node has one, else the zstd CLI. */
const zstdCompress = (zlib as { zstdCompressSync?: (b: Uint8Array) => Buffer }).zstdCompressSync;
const compress = (b: Uint8Array) => new Uint8Array(zstdCompress ? zstdCompress(b) : execFileSync("zstd", ["-q", "-c", "-1"], { input: b, maxBuffer: 1 << 30 }));

describe("zstd on a worker thread, the worker ending mid-layer", () => {
  it("fails the layer being decoded with the worker's exit, and the next layer decodes on a new worker", async () => {
    const unzstd = threadUnzstd(zstdWasmModule);
    const plain = content(48 << 20);
    const zst = compress(plain);

    const reader = decompressLayer(streamOf(zst), OCI_ZSTD, { unzstd }).getReader();
    const first = await reader.read();
    expect(first.value!.length).toBeGreaterThan(0);
    expect(started.length).toBe(1);
    await started[0]!.terminate();

    // Bounded: the reader is read until it fails or ends, and must not end with all the bytes.
    let got = first.value!.length;
    const failure = await (async () => {
      for (let i = 0; i < 1000; i++) {
        const r = await reader.read();
        if (r.done) return null;
        got += r.value.length;
      }
      return null;
    })().catch((err: Error) => err);
    expect(failure).toBeInstanceOf(Error);
    expect(failure!.message).toMatch(/zstd worker exited/);
    expect(got).toBeLessThan(plain.length);

    const again = await new Response(decompressLayer(streamOf(zst), OCI_ZSTD, { unzstd })).arrayBuffer();
    expect(sha256(new Uint8Array(again))).toBe(sha256(plain));
    expect(started.length).toBe(2);
  });
});
