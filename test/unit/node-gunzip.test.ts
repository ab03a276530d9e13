// Node's gunzip for layers (src/runtime/node-gunzip.ts) waits for its reader: a layer that inflates a
// thousand times is not inflated into memory ahead of a converter that has stopped reading.
import { gzipSync } from "node:zlib";
import { expect, it } from "vitest";
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
