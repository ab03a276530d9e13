// How one layer's tar entries become its tree: lexical paths, whiteouts, hardlinks, refusals.
import { describe, expect, it } from "vitest";
import { gzipSync } from "node:zlib";
import { convertLayer } from "../../src/convert/layer.ts";
import { LayerTree, MAX_DEPTH, pathComponents, SKIPPED_KEPT } from "../../src/convert/layer-tree.ts";
import type { TarEntry } from "../../src/convert/tar.ts";
import { treeToNodes } from "../../src/format/tree-table.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { parseDigest } from "../../src/oci/reference.ts";
import { MemoryStore } from "../../src/store/memory.ts";
import { sha256, tarHeader } from "../e2e/harness/images.ts";

function entry(path: string, type: TarEntry["type"] = "file", extra: Partial<TarEntry> = {}): TarEntry {
  return { path, type, mode: 0o644, uid: 0, gid: 0, uname: "", gname: "", size: 0, mtime: 0, mtimeNsec: 0, linkName: "", devMajor: 0, devMinor: 0, xattrs: new Map(), ...extra };
}

function build(entries: TarEntry[]): LayerTree {
  const tree = new LayerTree();
  for (const e of entries) tree.add(e);
  return tree;
}

// One FsNode tree per LayerTree, so that a hardlink's two names give one node.
const roots = new WeakMap<LayerTree, ReturnType<typeof treeToNodes>>();
const rootOf = (tree: LayerTree) => roots.get(tree) ?? roots.set(tree, treeToNodes(tree.table)).get(tree)!;
const at = (tree: LayerTree, path: string) => {
  let node = rootOf(tree);
  for (const p of path.split("/")) node = node.children!.get(p)!;
  return node;
};

describe("layer tree", () => {
  it("splits paths lexically and refuses any that climb out", () => {
    expect(pathComponents("./a//b/")).toEqual(["a", "b"]);
    expect(pathComponents("/abs/x")).toEqual(["abs", "x"]);
    expect(pathComponents("a/../../x")).toBeNull();
  });

  it("leaves out entries with .. and entries placed through a symlink, and reports both", () => {
    const tree = build([entry("../evil"), entry("link", "symlink", { linkName: "/etc" }), entry("link/passwd"), entry("ok")]);
    expect([...rootOf(tree).children!.keys()].sort()).toEqual(["link", "ok"]);
    expect(tree.skipped.kept.map((s) => s.path)).toEqual(["../evil", "link/passwd"]);
  });

  it("turns .wh.NAME into a whiteout and .wh..wh..opq into an opaque directory", () => {
    const tree = build([entry("etc/", "dir"), entry("etc/.wh.passwd"), entry("var/.wh..wh..opq")]);
    expect(at(tree, "etc/passwd").type).toBe("whiteout");
    expect(at(tree, "var").opaque).toBe(true);
    expect(at(tree, "var").implicit).toBe(true);
  });

  it("makes a directory that the same layer also whites out opaque instead of deleting it", () => {
    const tree = build([entry("d/", "dir"), entry("d/keep"), entry(".wh.d")]);
    expect(at(tree, "d").type).toBe("dir");
    expect(at(tree, "d").opaque).toBe(true);
    expect(at(tree, "d/keep").type).toBe("file");
  });

  it("drops AUFS bookkeeping entries entirely", () => {
    const tree = build([entry(".wh..wh.plnk/", "dir"), entry(".wh..wh.plnk/123.456"), entry(".wh..wh.aufs"), entry("real")]);
    expect([...rootOf(tree).children!.keys()]).toEqual(["real"]);
    expect(tree.skipped.count).toBe(0);
  });

  it("shares one node between a file and its hardlink, and keeps links to lower layers as references", () => {
    const tree = build([entry("a"), entry("b", "hardlink", { linkName: "a" }), entry("c", "hardlink", { linkName: "/usr/lower" })]);
    expect(at(tree, "b")).toBe(at(tree, "a"));
    expect(at(tree, "c")).toMatchObject({ type: "hardlink-ref", target: "usr/lower" });
  });

  it("describes the root from a ./ entry", () => {
    const tree = build([entry("./", "dir", { mode: 0o700, uid: 5 })]);
    expect(rootOf(tree)).toMatchObject({ perm: 0o700, uid: 5, implicit: false });
  });
});

describe("hostile depth", () => {
  /** A file whose path comes in a PAX record, so it may be as long as the reader allows (1 MiB). */
  function paxFile(path: string, data: string): Buffer[] {
    const line = (n: number) => `${n} path=${path}\n`; // the length counts its own digits
    let n = path.length + 8;
    while (Buffer.byteLength(line(n)) !== n) n++;
    const record = Buffer.from(line(n));
    const pad = (n: number) => Buffer.alloc((512 - (n % 512)) % 512);
    const pax = tarHeader({ name: "pax", type: "file", size: record.length });
    pax.write("x", 156); // typeflag: PAX extended header for the next entry
    let sum = 0;
    pax.write("        ", 148);
    for (const b of pax) sum += b;
    pax.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
    return [pax, record, pad(record.length), tarHeader({ name: "f", type: "file", data: Buffer.from(data) }), Buffer.from(data), pad(data.length)];
  }

  it(`leaves out entries nested deeper than ${MAX_DEPTH} directories; 20,000 levels convert instead of overflowing the stack`, async () => {
    const tree = build([entry(`${"d/".repeat(MAX_DEPTH - 1)}ok`), entry(`${"d/".repeat(MAX_DEPTH)}too-deep`)]);
    expect(tree.skipped.kept.map((s) => s.reason)).toEqual([`deeper than ${MAX_DEPTH} directories`]);

    const gz = gzipSync(Buffer.concat([...paxFile(`${"a/".repeat(20_000)}deep`, "deep\n"), ...paxFile("top", "top\n"), Buffer.alloc(1024)]));
    const layer = { digest: parseDigest(sha256(gz))!, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: gz.length, open: async () => new Blob([gz]).stream() };
    const converted = await convertLayer(layer, { store: new MemoryStore(), hasher: nodeHasher, params: { chunkShift: 16, codec: "none" } });
    expect([...converted.bootstrap.walk()].map((e) => e.path)).toEqual(["/", "/top"]);
    expect(converted.stats?.skipped.kept.map((s) => s.reason)).toEqual([`deeper than ${MAX_DEPTH} directories`]);
  });

  it("counts every entry it leaves out but keeps only the first reports, each path cut short", async () => {
    const tree = new LayerTree();
    const long = `${"x/".repeat(3000)}../out`;
    for (let i = 0; i < 5 * SKIPPED_KEPT; i++) tree.add(entry(i === 0 ? long : `../evil${i}`));
    expect(tree.skipped.count).toBe(5 * SKIPPED_KEPT);
    expect(tree.skipped.kept).toHaveLength(SKIPPED_KEPT);
    expect(tree.skipped.kept[0]!.path).toHaveLength(1001);
    expect(tree.skipped.kept.at(-1)!.path).toBe(`../evil${SKIPPED_KEPT - 1}`);
  });

  it("leaves out entries with a directory name over 255 bytes; before, the encoder threw a plain Error (an internal error at the proxy)", async () => {
    // 300 ASCII bytes, and 200 characters that are 400 bytes of UTF-8, as a directory and as a file.
    const long = ["d".repeat(300), "é".repeat(200)];
    const paths = [`${long[0]}/f`, `a/${long[1]}/g`, `a/${long[0]}`];
    const gz = gzipSync(Buffer.concat([...paths.flatMap((p) => paxFile(p, "x\n")), ...paxFile("a/ok", "ok\n"), Buffer.alloc(1024)]));
    const layer = { digest: parseDigest(sha256(gz))!, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", size: gz.length, open: async () => new Blob([gz]).stream() };
    const converted = await convertLayer(layer, { store: new MemoryStore(), hasher: nodeHasher, params: { chunkShift: 16, codec: "none" } });
    expect([...converted.bootstrap.walk()].map((e) => e.path)).toEqual(["/", "/a", "/a/ok"]);
    expect(converted.stats?.skipped.kept.map((s) => s.reason)).toEqual(["invalid name", "invalid name", "invalid name"]);
  });
});
