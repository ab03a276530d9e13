import { describe, expect, it } from "vitest";
import { BatchedWriter, coalesce, readAll } from "../../src/util/streams.ts";

function pieces(sizes: number[]): ReadableStream<Uint8Array> {
  let i = 0;
  let n = 0;
  return new ReadableStream({
    pull(c) {
      const size = sizes[i++];
      if (size === undefined) return c.close();
      c.enqueue(Uint8Array.from({ length: size }, () => n++ & 0xff));
    },
  });
}

describe("coalesce", () => {
  it("gathers small pieces into pieces of at least min bytes, keeping every byte in order", async () => {
    const sizes = [4096, 4096, 100, 70_000, 1, 1, 4096];
    const out: number[] = [];
    const reader = coalesce(pieces(sizes), 8192).getReader();
    const all: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      out.push(value.byteLength);
      all.push(value);
    }
    expect(out).toEqual([8192, 70_100, 4098]);
    const expected = await readAll(pieces(sizes));
    expect(Buffer.concat(all).equals(Buffer.from(expected))).toBe(true);
  });

  it("hands out copies, so a source that reuses its buffer can't change a piece already read", async () => {
    const shared = new Uint8Array(1000);
    let n = 0;
    // Pulled only on demand: the buffer is overwritten by the next read, as a reusing reader would.
    const source = new ReadableStream<Uint8Array>(
      {
        pull(c) {
          if (n === 5) return c.close();
          shared.fill(++n);
          c.enqueue(shared);
        },
      },
      { highWaterMark: 0 },
    );
    const reader = coalesce(source, 1).getReader();
    const got: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got.push(value);
    }
    expect(got.map((p) => p[0])).toEqual([1, 2, 3, 4, 5]);
  });

  it("passes cancellation on to the source", async () => {
    let cancelled: unknown;
    const source = new ReadableStream<Uint8Array>({ pull: (c) => c.enqueue(new Uint8Array(10)), cancel: (r) => void (cancelled = r) });
    const reader = coalesce(source, 100).getReader();
    await reader.read();
    await reader.cancel("stop");
    expect(cancelled).toBe("stop");
  });
});

describe("BatchedWriter", () => {
  it("gathers writes into pieces of the batch size, keeps the order, and copies what it holds", async () => {
    const pieces: Uint8Array[] = [];
    const writer = new BatchedWriter(async (bytes) => void pieces.push(bytes.slice()), 8);
    const input = [[1, 2, 3], [4, 5, 6], [7, 8, 9], Array.from({ length: 10 }, (_, i) => 10 + i), [20]].map((a) => Uint8Array.from(a));
    for (const bytes of input) {
      await writer.write(bytes);
      bytes.fill(0); // the caller may reuse its bytes once the write resolved
    }
    await writer.flush();
    const all = Array.from({ length: 20 }, (_, i) => i + 1);
    expect(pieces.map((p) => Array.from(p))).toEqual([all.slice(0, 8), all.slice(8, 16), all.slice(16)]);
    await writer.flush();
    expect(pieces).toHaveLength(3);
  });

  it("returns no promise for a write that only gathers, and one for a write that fills a piece", async () => {
    const pieces: number[][] = [];
    const writer = new BatchedWriter(async (bytes) => void pieces.push(Array.from(bytes)), 4);
    let released = 0;
    expect(writer.write(Uint8Array.of(1, 2), () => released++)).toBeUndefined();
    expect(released, "copied, so released at once").toBe(1);
    expect(writer.write(Uint8Array.of(3))).toBeUndefined();
    const filling = writer.write(Uint8Array.of(4, 5));
    expect(filling).toBeInstanceOf(Promise);
    await filling;
    await writer.flush();
    expect(pieces).toEqual([[1, 2, 3, 4], [5]]);
  });

  it("goes on while a piece is written, one write at a time, and waits when every buffer is taken", async () => {
    const started: number[][] = [];
    const finish: (() => void)[] = [];
    let writing = 0;
    let most = 0;
    const writer = new BatchedWriter(async (bytes) => {
      started.push(Array.from(bytes));
      most = Math.max(most, ++writing);
      await new Promise<void>((resolve) => finish.push(resolve));
      writing--;
    }, 2);
    // The first piece goes to the sink and the write returns without waiting for it.
    await writer.write(Uint8Array.of(1, 2));
    expect(started).toEqual([[1, 2]]);
    // The second is gathered into the other buffer; with both taken, the write waits for the first.
    let third = false;
    const second = Promise.resolve(writer.write(Uint8Array.of(3, 4))).then(() => (third = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(third).toBe(false);
    expect(started).toEqual([[1, 2]]);
    finish.shift()!();
    await second;
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(started).toEqual([[1, 2], [3, 4]]);
    const flushed = writer.flush();
    finish.shift()!();
    await flushed;
    expect(most).toBe(1);
  });

  it("writes a whole piece given with release as it is, and releases it after its write; copies and releases a smaller one at once", async () => {
    const sunk: Uint8Array[] = [];
    const finish: (() => void)[] = [];
    const writer = new BatchedWriter(async (bytes) => {
      sunk.push(bytes);
      await new Promise<void>((resolve) => finish.push(resolve));
    }, 4);
    const released: string[] = [];
    const small = Uint8Array.of(1, 2);
    await writer.write(small, () => released.push("small"));
    expect(released).toEqual(["small"]);
    const whole = Uint8Array.of(3, 4, 5, 6, 7);
    const writing = writer.write(whole, () => released.push("whole"));
    // What was gathered goes first, then the whole piece itself, not a copy.
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(sunk.map((b) => Array.from(b))).toEqual([[1, 2]]);
    finish.shift()!();
    await writing;
    expect(sunk[1]).toBe(whole);
    expect(released).toEqual(["small"]);
    finish.shift()!();
    await writer.flush();
    expect(released).toEqual(["small", "whole"]);
  });

  it("fails the next write or flush with a failed write's error, and writes nothing after it", async () => {
    const written: number[][] = [];
    const writer = new BatchedWriter(async (bytes) => {
      if (bytes[0] === 1) throw new Error("store full");
      written.push(Array.from(bytes));
    }, 2);
    await writer.write(Uint8Array.of(1, 2));
    await expect(writer.write(Uint8Array.of(3, 4, 5, 6))).rejects.toThrow("store full");
    await expect(writer.flush()).rejects.toThrow("store full");
    await writer.settle();
    expect(written).toEqual([]);
  });
});
