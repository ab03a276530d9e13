// Merging layer bootstraps into an image: the whiteout rules of the OCI image spec and OverlayFS,
// hardlinks within and across layers, and directory metadata. Each layer is built from tar-like
// entries with LayerTree and encoded as a layer bootstrap, as the converter does; every merge's bytes
// must be the reference merge's (merge-reference.ts, over FsNode trees), from the trees as built and
// from the bootstraps decoded again.
import { createHash } from "node:crypto";
import { Prng } from "../e2e/harness/images.ts";
import { describe, expect, it } from "vitest";
import { LayerTree, type SkippedEntries } from "../../src/convert/layer-tree.ts";
import { mergeLayers } from "../../src/convert/merge.ts";
import { mergeModels } from "./merge-reference.ts";
import type { TarEntry } from "../../src/convert/tar.ts";
import { Bootstrap, encodeBootstrap } from "../../src/format/index.ts";
import { imageOfOneLayer } from "../../src/format/encode.ts";
import type { BootstrapModel } from "../../src/format/model.ts";
import { encodeTable } from "../../src/format/encode-table.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { ChunkTable, treeToNodes } from "../../src/format/tree-table.ts";

const sha = (s: string) => new Uint8Array(createHash("sha256").update(s).digest());

type Spec = Partial<TarEntry> & { path: string; type?: TarEntry["type"]; content?: string };

function entry(s: Spec): TarEntry {
  const type = s.type ?? "file";
  return {
    type,
    mode: type === "dir" ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: s.content?.length ?? 0,
    mtime: 1_000,
    mtimeNsec: 0,
    linkName: "",
    devMajor: 0,
    devMinor: 0,
    xattrs: new Map(),
    ...s,
  };
}

/**
 * A layer as converted, its bootstrap and its tree; each file's content becomes one chunk in the
 * layer's single blob. The bootstrap is the converter's (encodeTable), and must be what the FsNode
 * encoder writes for the same tree.
 */
function converted(n: number, specs: Spec[], strict = true): { bootstrap: Bootstrap; model: BootstrapModel } {
  const tree = new LayerTree();
  const chunks = new ChunkTable();
  let offset = 0;
  for (const s of specs) {
    const node = tree.add(entry(s));
    const content = s.content ?? "";
    if (node !== -1 && content.length) {
      const digest = sha(content);
      let index = chunks.find(digest);
      if (index === -1) {
        index = chunks.add({ digest, compressed: false, storedOffset: offset, storedSize: content.length, size: content.length, uncompressedOffset: offset });
        offset += content.length;
      }
      tree.table.chunkRefs.set(tree.table.addChunkRef(node), index);
      tree.table.setSize(node, content.length);
    }
  }
  if (strict) expect(tree.skipped.count).toBe(0);
  const bytes = encodeTable({ codec: 0, chunkShift: 16, blob: { storedSize: offset, layerDigest: `sha256:${String(n).repeat(64)}` }, tree: tree.table, chunks }, nodeHasher);
  const blob = Bootstrap.decode(bytes).blob(0);
  const model: BootstrapModel = {
    kind: "layer",
    codec: 0,
    chunkShift: 16,
    platform: "",
    blobs: [blob],
    chunks: chunks.records(),
    root: treeToNodes(tree.table),
  };
  expect(Buffer.from(encodeBootstrap(model)).equals(bytes)).toBe(true);
  return { bootstrap: Bootstrap.decode(bytes), model };
}

/** A layer bootstrap, as stored. */
const layer = (n: number, specs: Spec[]): Bootstrap => converted(n, specs).bootstrap;

function merge(...layers: Spec[][]) {
  return mergeBuilt(layers.map((specs, i) => converted(i, specs)));
}

/**
 * `asBuilt`: the reference merge of the trees as built, whose directories list in tar order, must
 * write the same too; where a hardlink in a layer names a path the same layer changes, that order
 * decides, so random stacks compare with the decoded layers only (as the converter merges them).
 */
function mergeBuilt(built: { bootstrap: Bootstrap; model: BootstrapModel }[], asBuilt = true) {
  const { bytes, skipped } = mergeLayers(
    built.map((l) => l.bootstrap),
    "linux/amd64",
  );
  // The same bytes as the reference merge over FsNode trees, and the same entries left out (in
  // another order: a tree as built lists a directory in tar order, not name order).
  const sorted = (s: SkippedEntries) => [s.count, s.kept.map((k) => `${k.path} ${k.reason}`).sort()];
  for (const models of [built.map((l) => l.bootstrap.toModel()), ...(asBuilt ? [built.map((l) => l.model)] : [])]) {
    const reference = mergeModels(models, "linux/amd64");
    expect(Buffer.from(encodeBootstrap(reference.model)).equals(bytes)).toBe(true);
    expect(sorted(reference.skipped)).toEqual(sorted(skipped));
  }
  // A lone layer without layer flags is its own image, with no merge: the same bytes.
  const alone = built.length === 1 ? imageOfOneLayer(built[0]!.bootstrap, "linux/amd64") : null;
  if (alone) expect(Buffer.from(alone).equals(bytes)).toBe(true);
  return { image: Bootstrap.decode(bytes), skipped, alone };
}

const paths = (b: Bootstrap) => [...b.walk()].map((e) => e.path);
const inodeAt = (b: Bootstrap, p: string) => b.inode(b.lookup(p) ?? -1);
/** The content of a one-chunk file, recognised by its chunk digest among the candidates. */
function contentOf(b: Bootstrap, p: string, candidates: string[]): string | undefined {
  const [c] = b.chunks(b.lookup(p)!);
  if (!c) return "";
  return candidates.find((s) => Buffer.from(sha(s)).equals(c.digest));
}

describe("merging layers", () => {
  it("deletes a file with .wh.NAME and leaves its siblings", () => {
    const { image } = merge(
      [{ path: "etc/", type: "dir" }, { path: "etc/a", content: "a" }, { path: "etc/b", content: "b" }],
      [{ path: "etc/.wh.a" }],
    );
    expect(paths(image)).toEqual(["/", "/etc", "/etc/b"]);
  });

  it("deletes a whole directory with .wh.NAME", () => {
    const { image } = merge(
      [{ path: "opt/", type: "dir" }, { path: "opt/app/", type: "dir" }, { path: "opt/app/bin/", type: "dir" }, { path: "opt/app/bin/run", content: "run" }, { path: "opt/keep", content: "k" }],
      [{ path: "opt/.wh.app" }],
    );
    expect(paths(image)).toEqual(["/", "/opt", "/opt/keep"]);
  });

  it("deletes a name only in lower layers: the whiting-out layer's own entry stays", () => {
    const { image } = merge([{ path: "x", content: "old" }], [{ path: "x", content: "new" }, { path: ".wh.x" }]);
    expect(contentOf(image, "/x", ["old", "new"])).toBe("new");
  });

  it("hides lower children of an opaque directory but keeps the layer's own", () => {
    const { image } = merge(
      [{ path: "var/", type: "dir" }, { path: "var/lib/", type: "dir" }, { path: "var/lib/old", content: "o" }, { path: "var/lib/sub/", type: "dir" }, { path: "var/other", content: "x" }],
      [{ path: "var/lib/", type: "dir", mode: 0o700 }, { path: "var/lib/.wh..wh..opq" }, { path: "var/lib/new", content: "n" }],
    );
    expect(paths(image)).toEqual(["/", "/var", "/var/lib", "/var/lib/new", "/var/other"]);
    expect(inodeAt(image, "/var/lib").mode & 0o7777).toBe(0o700);
  });

  it("replaces a file by a directory and a directory by a file", () => {
    const { image } = merge(
      [{ path: "f", content: "file" }, { path: "d/", type: "dir" }, { path: "d/inner", content: "i" }],
      [{ path: "f/", type: "dir", mode: 0o750 }, { path: "f/child", content: "c" }, { path: "d", content: "now a file" }],
    );
    expect(paths(image)).toEqual(["/", "/d", "/f", "/f/child"]);
    expect(inodeAt(image, "/f")).toMatchObject({ type: "dir", mode: 0o040750 });
    expect(inodeAt(image, "/d")).toMatchObject({ type: "file", size: 10 });
    expect(contentOf(image, "/d", ["now a file"])).toBe("now a file");
  });

  it("replaces a file by a symlink and keeps chunks pointing at their own layer's blob", () => {
    const { image } = merge([{ path: "a", content: "lower" }, { path: "b", content: "bb" }], [{ path: "a", type: "symlink", linkName: "b" }, { path: "c", content: "upper" }]);
    expect(inodeAt(image, "/a").type).toBe("symlink");
    expect(image.readlink(image.lookup("/a")!)).toBe("b");
    expect(image.chunks(image.lookup("/b")!)[0]!.blob).toBe(0);
    const c = image.chunks(image.lookup("/c")!)[0]!;
    expect(c.blob).toBe(1);
    expect(c.storedOffset).toBe(0); // the offset within layer 1's blob, untouched by the merge
    expect(image.blobCount).toBe(2);
    expect(image.blob(1).layerDigest).toBe(`sha256:${"1".repeat(64)}`);
    expect(image.chunkCount).toBe(3); // chunk tables concatenated
  });

  it("keeps a hardlink within a layer as one inode", () => {
    const { image } = merge([{ path: "bin/", type: "dir" }, { path: "bin/gzip", content: "gz", mode: 0o755 }, { path: "bin/gunzip", type: "hardlink", linkName: "bin/gzip" }]);
    const ino = image.lookup("/bin/gzip");
    expect(image.lookup("/bin/gunzip")).toBe(ino);
    expect(image.inode(ino!)).toMatchObject({ nlink: 2, mode: 0o100755 });
  });

  it("resolves a hardlink to a lower layer's file (hardlink-ref) to that file's inode", () => {
    const lower = layer(0, [{ path: "usr/", type: "dir" }, { path: "usr/lib.so", content: "lib" }]);
    const upper = layer(1, [{ path: "alias.so", type: "hardlink", linkName: "./usr/lib.so" }]);
    expect(upper.inode(upper.lookup("/alias.so")!).type).toBe("hardlink-ref");
    const { bytes, skipped } = mergeLayers([lower, upper], "linux/amd64");
    const image = Bootstrap.decode(bytes);
    expect(skipped.count).toBe(0);
    expect(image.lookup("/alias.so")).toBe(image.lookup("/usr/lib.so"));
    expect(inodeAt(image, "/alias.so")).toMatchObject({ type: "file", nlink: 2, size: 3 });
    expect(image.chunks(image.lookup("/alias.so")!)[0]!.blob).toBe(0);
  });

  it("reports a hardlink-ref whose target no lower layer has, and leaves it out", () => {
    const { image, skipped } = merge([{ path: "a", content: "a" }], [{ path: "l", type: "hardlink", linkName: "missing" }]);
    expect(paths(image)).toEqual(["/", "/a"]);
    expect(skipped.kept).toEqual([{ path: "/l", reason: expect.stringContaining("missing") }]);
  });

  it("keeps a hardlinked file's content when its other name is whited out later; nlink drops", () => {
    const { image } = merge(
      [{ path: "data", content: "payload" }, { path: "copy", type: "hardlink", linkName: "data" }],
      [{ path: ".wh.data" }],
    );
    expect(paths(image)).toEqual(["/", "/copy"]);
    expect(inodeAt(image, "/copy")).toMatchObject({ type: "file", nlink: 1, size: 7 });
    expect(contentOf(image, "/copy", ["payload"])).toBe("payload");
  });

  it("drops a hardlink-ref whose target was whited out in an earlier layer", () => {
    const { image, skipped } = merge([{ path: "t", content: "t" }], [{ path: ".wh.t" }], [{ path: "l", type: "hardlink", linkName: "t" }]);
    expect(paths(image)).toEqual(["/"]);
    expect(skipped.count).toBe(1);
  });

  it("updates a directory's metadata from an upper layer without losing its children", () => {
    const { image } = merge(
      [{ path: "srv/", type: "dir", mode: 0o755, uid: 0, mtime: 1 }, { path: "srv/a", content: "a" }],
      [{ path: "srv/", type: "dir", mode: 0o2770, uid: 33, gid: 33, mtime: 2 }, { path: "srv/b", content: "b" }],
    );
    expect(paths(image)).toEqual(["/", "/srv", "/srv/a", "/srv/b"]);
    expect(inodeAt(image, "/srv")).toMatchObject({ mode: 0o042770, uid: 33, gid: 33, mtime: 2 });
  });

  it("creates implicit parents with default attributes and keeps existing ones' attributes", () => {
    const { image } = merge(
      [{ path: "home/", type: "dir", mode: 0o700, uid: 1000, gid: 1000, mtime: 9 }],
      [{ path: "home/user/.profile", content: "p" }, { path: "a/b/c", content: "c" }],
    );
    expect(paths(image)).toEqual(["/", "/a", "/a/b", "/a/b/c", "/home", "/home/user", "/home/user/.profile"]);
    expect(inodeAt(image, "/home")).toMatchObject({ mode: 0o040700, uid: 1000, gid: 1000, mtime: 9 });
    expect(inodeAt(image, "/a/b")).toMatchObject({ type: "dir", mode: 0o040755, uid: 0, gid: 0 });
    expect(inodeAt(image, "/home/user")).toMatchObject({ type: "dir", mode: 0o040755 });
  });

  it("takes the root's metadata from a layer's ./ entry", () => {
    const { image } = merge([{ path: "./", type: "dir", mode: 0o750, mtime: 77 }, { path: "f", content: "f" }]);
    expect(image.inode(0)).toMatchObject({ mode: 0o040750, mtime: 77 });
  });

  it("hides a whited-out directory recreated in the same layer: only the new contents show", () => {
    const { image } = merge(
      [{ path: "cfg/", type: "dir" }, { path: "cfg/old", content: "o" }],
      [{ path: ".wh.cfg" }, { path: "cfg/", type: "dir" }, { path: "cfg/new", content: "n" }],
    );
    expect(paths(image)).toEqual(["/", "/cfg", "/cfg/new"]);
  });

  it("hides everything below with an opaque root, and keeps the root's attributes", () => {
    const { image } = merge(
      [{ path: "./", type: "dir", mode: 0o750, mtime: 5 }, { path: "etc/", type: "dir" }, { path: "etc/a", content: "a" }, { path: "top", content: "t" }],
      [{ path: ".wh..wh..opq" }, { path: "new", content: "n" }],
    );
    expect(paths(image)).toEqual(["/", "/new"]);
    expect(image.inode(0)).toMatchObject({ mode: 0o040750, mtime: 5, nlink: 2 });
  });

  it("keeps an opaque directory's attributes and xattrs when the layer does not list it", () => {
    const xattrs = new Map([["user.tag", new TextEncoder().encode("kept")]]);
    const { image } = merge(
      [{ path: "d/", type: "dir", mode: 0o711, uid: 7, xattrs }, { path: "d/old", content: "o" }, { path: "d/sub/", type: "dir" }],
      [{ path: "d/.wh..wh..opq" }, { path: "d/fresh", content: "f" }],
    );
    expect(paths(image)).toEqual(["/", "/d", "/d/fresh"]);
    expect(inodeAt(image, "/d")).toMatchObject({ mode: 0o040711, uid: 7, nlink: 2 });
    expect(new TextDecoder().decode(image.xattrs(image.lookup("/d")!).get("user.tag"))).toBe("kept");
  });

  it("does not link to a file an opaque directory hid; three layers keep their blobs apart", () => {
    const { image, skipped } = merge(
      [{ path: "lib/", type: "dir" }, { path: "lib/a.so", content: "a" }, { path: "keep", content: "k" }],
      [{ path: "lib/", type: "dir" }, { path: "lib/.wh..wh..opq" }, { path: "lib/b.so", content: "b" }],
      [{ path: "x.so", type: "hardlink", linkName: "lib/a.so" }, { path: "y.so", type: "hardlink", linkName: "lib/b.so" }, { path: ".wh.keep" }],
    );
    expect(paths(image)).toEqual(["/", "/lib", "/lib/b.so", "/y.so"]);
    expect(skipped.count).toBe(1);
    expect(image.lookup("/y.so")).toBe(image.lookup("/lib/b.so"));
    expect(image.chunks(image.lookup("/y.so")!)[0]!.blob).toBe(1);
    expect(image.blobCount).toBe(3);
  });

  it("writes a lone layer as its image directly unless it has whiteouts or links to lower layers, and merges one that has them", () => {
    const plain: Spec[] = [
      { path: "./", type: "dir", mode: 0o750, mtime: 77 },
      { path: "etc/", type: "dir" },
      { path: "etc/hostname", content: "edge\n", xattrs: new Map([["user.k", new Uint8Array([1, 2])]]) },
      { path: "etc/link", type: "hardlink", linkName: "etc/hostname" },
      { path: "bin", type: "symlink", linkName: "usr/bin" },
      { path: "dev/", type: "dir" },
      { path: "dev/null", type: "char", devMajor: 1, devMinor: 3 },
    ];
    expect(merge(plain).alone).not.toBeNull();
    // Flags a merge over an empty root drops without changing the tree: merge() checks the bytes.
    const unchanged: [string, Spec[]][] = [
      ["implicit root", plain.slice(1)],
      ["implicit directories", [...plain, { path: "a/b/c", content: "c" }, { path: "a/b/d/", type: "dir", mode: 0o700 }]],
      ["opaque directory", [...plain, { path: "etc/.wh..wh..opq" }]],
      ["opaque root", [...plain, { path: ".wh..wh..opq" }]],
    ];
    for (const [what, specs] of unchanged) {
      const { alone, image } = merge(specs);
      expect(alone, what).not.toBeNull();
      expect(image.layerFlags, what).toBe(0);
    }
    // Each of these makes the merged tree differ from the layer's.
    const changed: [string, Spec[]][] = [
      ["whiteout", [...plain, { path: "etc/.wh.motd" }]],
      ["hardlink to a lower layer", [...plain, { path: "etc/lower", type: "hardlink", linkName: "usr/lib/x" }]],
      ["whiteout beside implicit directories", [...plain.slice(1), { path: "a/b/c", content: "c" }, { path: "a/.wh.x" }]],
    ];
    for (const [what, specs] of changed) expect(merge(specs).alone, what).toBeNull();
  });

  it("writes the reference merge's bytes for random stacks of layers", () => {
    const prng = new Prng("merge-stacks");
    const pick = <T>(xs: readonly T[]): T => xs[prng.int(xs.length)]!;
    const names = ["a", "b", "c", "lib", "x.so"];
    for (let round = 0; round < 150; round++) {
      const layerCount = 1 + prng.int(4);
      const built = Array.from({ length: layerCount }, (_, n) => {
        const specs: Spec[] = [];
        for (let k = 0, count = 1 + prng.int(12); k < count; k++) {
          const depth = 1 + prng.int(3);
          const path = Array.from({ length: depth }, () => pick(names)).join("/");
          const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
          const leaf = path.slice(parent.length);
          const kind = prng.int(10);
          if (kind < 3) specs.push({ path, content: `${round}-${n}-${k}`, mode: pick([0o644, 0o755]) });
          else if (kind < 5) specs.push({ path: `${path}/`, type: "dir", mode: pick([0o755, 0o700]), uid: prng.int(3) });
          else if (kind === 5) specs.push({ path: `${parent}.wh.${leaf}` });
          else if (kind === 6) specs.push({ path: `${parent}.wh..wh..opq` });
          else if (kind === 7) specs.push({ path, type: "symlink", linkName: pick(names) });
          else specs.push({ path, type: "hardlink", linkName: Array.from({ length: 1 + prng.int(2) }, () => pick(names)).join("/") });
        }
        return converted(n, specs, false);
      });
      mergeBuilt(built, false);
    }
  });

  it("refuses layers converted with different parameters", () => {
    const a = layer(0, [{ path: "a", content: "a" }]);
    const b = Bootstrap.decode(encodeBootstrap({ ...a.toModel(), chunkShift: 20 }));
    expect(() => mergeLayers([a, b], "linux/amd64")).toThrow(/different parameters/);
    expect(() => mergeLayers([], "linux/amd64")).toThrow(/at least one layer/);
  });
});
