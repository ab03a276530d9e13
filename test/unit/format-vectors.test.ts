// docs/format.md's test vectors: each hex block must decode to the JSON block of the same name, so
// the specification and src/format cannot drift apart unnoticed.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { Bootstrap, encodeBootstrap, newDir, baseNode } from "../../src/format/index.ts";
import { parseVectors, vectorJson, vectorMarkdown } from "./vector-json.ts";

const DOC = new URL("../../docs/format.md", import.meta.url);
const vectors = parseVectors(readFileSync(DOC, "utf8"));

describe("docs/format.md test vectors", () => {
  it("has at least one vector, each with both a hex and a json block", () => {
    expect(vectors.size, "no ```hex test-vector NAME``` block in docs/format.md").toBeGreaterThan(0);
    for (const [name, v] of vectors) {
      expect(v.hex, `${name} has no hex block`).toBeDefined();
      expect(v.json, `${name} has no json block`).toBeDefined();
    }
  });

  for (const [name, v] of vectors) {
    it(`decodes vector ${name} to its JSON`, () => {
      const b = Bootstrap.decode(v.hex!);
      expect(vectorJson(b)).toEqual(v.json);
      // And the encoder writes the same bytes back: the vector pins the encoding, not just the meaning.
      expect(encodeBootstrap(b.toModel())).toEqual(v.hex);
    });
  }

  it("parses what vectorMarkdown writes (the helpers the vectors are generated with)", () => {
    const root = newDir();
    root.children!.set("l", { ...baseNode("symlink", 0o777), target: "x", size: 1 });
    const b = Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 16, platform: "linux/arm64/v8", blobs: [], chunks: [], root }));
    const parsed = parseVectors(`text\n\n${vectorMarkdown("tiny", b)}\nmore text\n`);
    expect([...parsed.keys()]).toEqual(["tiny"]);
    expect(parsed.get("tiny")!.hex).toEqual(b.bytes);
    expect(parsed.get("tiny")!.json).toEqual({
      kind: "image",
      platform: "linux/arm64/v8",
      chunkShift: 16,
      codec: 0,
      entries: [
        { path: "/", type: "dir", mode: "0o755", uid: 0, gid: 0, nlink: 2, size: 0 },
        { path: "/l", type: "symlink", mode: "0o777", uid: 0, gid: 0, nlink: 1, size: 1, target: "x" },
      ],
    });
  });
});
