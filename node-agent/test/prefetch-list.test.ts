// Prefetch lists (node-agent/src/prefetch-list.ts): the order of `all`, reading a list against an
// image, and recording one.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir, type ChunkRecord } from "../../src/format/model.ts";
import { tempDir } from "../../test/e2e/harness/workdir.ts";
import { allChunks, chunksOfList, PrefetchRecorder } from "../src/prefetch-list.ts";

const sha = (s: string) => createHash("sha256").update(s).digest();
const hex = (s: string) => sha(s).toString("hex");

/** Two layers' data blobs; the chunk table lists them out of data order on purpose. */
function image(): Bootstrap {
  const chunk = (name: string, blob: number, storedOffset: number): ChunkRecord => ({
    digest: sha(name),
    blob,
    compressed: false,
    storedOffset,
    storedSize: 10,
    size: 10,
    uncompressedOffset: storedOffset,
  });
  const blobs = [0, 1].map((i) => ({ dataDigest: sha(`data${i}`), storedSize: 30, layerDigest: `sha256:${hex(`layer${i}`)}` }));
  const chunks = [chunk("b", 1, 10), chunk("a", 0, 20), chunk("c", 0, 0), chunk("d", 1, 0), chunk("e", 0, 10)];
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs, chunks, root: newDir() }));
}

const names = (b: Bootstrap, indexes: number[]) => indexes.map((i) => ["b", "a", "c", "d", "e"].find((n) => hex(n) === Buffer.from(b.chunk(i).digest).toString("hex")));

describe("prefetch lists", () => {
  test("all: every chunk, layer by layer, in the order of each data blob", () => {
    const b = image();
    expect(names(b, allChunks(b))).toEqual(["c", "e", "a", "d", "b"]);
  });

  test("a list names chunks by digest, in its order; comments are skipped and unknown digests counted", () => {
    const b = image();
    const text = ["# skiff prefetch list v1", hex("d"), "# a comment", "", hex("a"), hex("not in this image"), hex("d")].join("\n");
    const { chunks, unknown } = chunksOfList(text, b, "list");
    expect(names(b, chunks)).toEqual(["d", "a", "d"]);
    expect(unknown).toBe(1);
  });

  test("anything else is refused, naming the file and line", () => {
    const b = image();
    expect(() => chunksOfList("hello\n", b, "f")).toThrow(/f: not a skiff prefetch list/);
    expect(() => chunksOfList(`# skiff prefetch list v1\n${hex("a")}\nABC\n`, b, "f")).toThrow(/f: line 3: not a lowercase sha256 hex digest/);
  });

  test("the recorder writes each chunk once, in first-seen order, as the flushes go", async () => {
    const b = image();
    const path = join(tempDir("prefetch-list"), "list");
    const recorder = await PrefetchRecorder.create(path, b);
    expect(await readFile(path, "utf8")).toBe("# skiff prefetch list v1\n");
    for (const i of [3, 1, 3]) recorder.saw(i);
    await recorder.flush();
    for (const i of [1, 0]) recorder.saw(i);
    await recorder.flush();
    const lines = (await readFile(path, "utf8")).trim().split("\n");
    expect(lines.slice(1)).toEqual([hex("d"), hex("a"), hex("b")]);
    expect(recorder.count).toBe(3);
    expect(names(b, chunksOfList(await readFile(path, "utf8"), b, path).chunks)).toEqual(["d", "a", "b"]);
  });
});
