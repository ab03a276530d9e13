// Node's gunzip for layers (src/runtime/node-gunzip.ts) waits for its reader: a layer that inflates a
// thousand times is not inflated into memory ahead of a converter that has stopped reading. Pieces
// written while zlib is busy are joined, and their writer is held back once a batch waits.
import { createHash, randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import { expect, it, vi } from "vitest";
import { nodeGunzip } from "../../src/runtime/node-gunzip.ts";

it("stops inflating while its reader waits", async () => {
  const expanded = 256 * 2 ** 20;
  const gz = new Uint8Array(gzipSync(new Uint8Array(expanded)));
  const { writable, readable } = nodeGunzip();
  const writer = writable.getWriter();
  void writer.write(gz).then(() => writer.close()).catch(() => {});
  const reader = readable.getReader();
  const first = await reader.read();
  expect(first.value!.byteLength).toBeGreaterThan(0);
  const held = process.memoryUsage().arrayBuffers;
  // Time for zlib to inflate all of it, were it not waiting.
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(process.memoryUsage().arrayBuffers - held).toBeLessThan(48 * 2 ** 20);
  // And all of it still comes out once read.
  let total = first.value!.byteLength;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
  }
  expect(total).toBe(expanded);
});

/** Writes `gz` in pieces of 1,000 bytes, then closes; `written()` tells how far it got. */
function writeInPieces(writable: WritableStream<Uint8Array>, gz: Uint8Array) {
  const writer = writable.getWriter();
  let written = 0;
  const writing = (async () => {
    for (let at = 0; at < gz.length; at += 1000) {
      await writer.write(gz.subarray(at, at + 1000));
      written = Math.min(gz.length, at + 1000);
    }
    await writer.close();
  })();
  return { writing, written: () => written };
}

it("inflates a layer written in thousands of small pieces to the same bytes, holding its writer back while the reader waits", async () => {
  // Incompressible, so that the input is larger than what the output queue and a batch take.
  const original = new Uint8Array(randomBytes(24 * 2 ** 20));
  const gz = new Uint8Array(gzipSync(original, { level: 1 }));
  const { writable, readable } = nodeGunzip();
  const { writing, written } = writeInPieces(writable, gz);
  const reader = readable.getReader();
  const pieces: Uint8Array[] = [];
  const first = await reader.read();
  pieces.push(first.value!);
  // The reader stops: the writer gets only so far (the output queue, then a batch of input).
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(written()).toBeLessThan(gz.length);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pieces.push(value);
  }
  await writing;
  const out = Buffer.concat(pieces);
  expect(out.length).toBe(original.length);
  expect(createHash("sha256").update(out).digest("hex")).toBe(createHash("sha256").update(original).digest("hex"));
});

it("lets a writer it holds back go with an error when its reader cancels", async () => {
  const gz = new Uint8Array(gzipSync(randomBytes(24 * 2 ** 20), { level: 1 }));
  const { writable, readable } = nodeGunzip();
  const { writing, written } = writeInPieces(writable, gz);
  const reader = readable.getReader();
  await reader.read();
  // Held back: the output queue is full and a batch of input waits.
  await vi.waitFor(() => {
    const before = written();
    return new Promise<void>((resolve, reject) => setTimeout(() => (written() === before && before > 0 ? resolve() : reject(new Error("still writing"))), 50));
  });
  expect(written()).toBeLessThan(gz.length);
  await reader.cancel();
  await expect(writing).rejects.toThrow();
});
