// The decoder checks names and link targets are well-formed UTF-8 in place, without decoding.
import { describe, expect, it } from "vitest";
import { Bootstrap, BootstrapError, encodeBootstrap, baseNode, newDir, type FsNode } from "../../src/format/index.ts";
import { readCounts, sectionOffsets } from "../../src/format/layout.ts";

/** A one-entry image whose entry name is `name`; returns the bytes and where the name is stored. */
function withName(name: string, node: FsNode = baseNode("fifo", 0o644)) {
  const bytes = encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "", blobs: [], chunks: [], root: newDir({ children: new Map([[name, node]]) }) });
  const view = new DataView(bytes.buffer);
  const counts = readCounts(view);
  const at = sectionOffsets(counts);
  const nameAt = at.strings + view.getUint32(at.dirents, true);
  return { bytes, nameAt };
}

describe("UTF-8 in names", () => {
  it("accepts multi-byte names of every length class", () => {
    for (const name of ["é", "中文", "😀", "a\u07ffb\uffffc"]) {
      const { bytes } = withName(name);
      expect(Bootstrap.decode(bytes).lookup(`/${name}`)).toBe(1);
    }
  });

  it.each([
    ["a lone continuation byte", [0x80]],
    ["an overlong slash", [0xc0, 0xaf]],
    ["an overlong three-byte form", [0xe0, 0x80, 0xaf]],
    ["a UTF-16 surrogate", [0xed, 0xa0, 0x80]],
    ["a code point past U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a truncated sequence", [0x61, 0xe4, 0xb8]],
  ])("refuses %s", (_, bad) => {
    const name = "x".repeat(bad.length);
    const { bytes, nameAt } = withName(name);
    bytes.set(bad, nameAt);
    expect(() => Bootstrap.decode(bytes)).toThrow(BootstrapError);
    expect(() => Bootstrap.decode(bytes)).toThrow(/not UTF-8|'\/'/);
  });
});
