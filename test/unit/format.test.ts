// The bootstrap format: encode → decode round trips of a hand-built tree with every node type, and
// the decoder refusing corrupted bytes, each crafted by changing one field at the offset
// docs/format.md gives for it.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { Bootstrap, BootstrapError, encodeBootstrap } from "../../src/format/index.ts";
import * as L from "../../src/format/layout.ts";
import { baseNode, isValidName, newDir, type BootstrapModel, type ChunkRecord, type FsNode } from "../../src/format/model.ts";

const SHIFT = 16;
const CHUNK = 1 << SHIFT;
const sha = (s: string) => new Uint8Array(createHash("sha256").update(s).digest());
const utf8 = (s: string) => new TextEncoder().encode(s);

/** Chunk records laid end to end in one uncompressed blob. */
function chunkTable(sizes: number[]): ChunkRecord[] {
  let offset = 0;
  return sizes.map((size, i) => {
    const c = { digest: sha(`chunk ${i}`), blob: 0, compressed: false, storedOffset: offset, storedSize: size, size, uncompressedOffset: offset };
    offset += size;
    return c;
  });
}

function fileNode(chunks: number[], size: number, meta: Partial<FsNode> = {}): FsNode {
  return { ...baseNode("file", 0o644), chunks, size, ...meta };
}

const LONG_NAME = "n".repeat(250) + "-long"; // 255 bytes
const DEEP = 64;
// Names whose UTF-8 byte order differs from JavaScript's UTF-16 order: U+FF5E sorts before U+1F600
// in UTF-8 (ef… < f0…) but after it in UTF-16 (ff5e > d83d).
const WIDE = "\uff5e";
const EMOJI = "\u{1f600}";

/** Every node type, a hardlink, xattrs, a 255-byte name, multi-byte names and a deep chain. */
function sampleModel(): BootstrapModel {
  const chunks = chunkTable([100, CHUNK, 10, 7]);
  const total = chunks.reduce((n, c) => n + c.size, 0);
  const sh = fileNode([0], 100, { perm: 0o755, uid: 0, gid: 0, mtime: 1_700_000_000, mtimeNsec: 123_456_789 });
  sh.xattrs = new Map([
    ["user.comment", utf8("hello")],
    ["security.capability", new Uint8Array([1, 0, 0, 2, 0, 0xff, 0, 0])],
  ]);
  const bin = newDir();
  bin.children!.set("sh", sh);
  bin.children!.set("sh-again", sh); // hardlink: the same node under two names
  bin.children!.set("su", fileNode([3], 7, { perm: 0o4755 }));
  bin.children!.set("sgid", fileNode([], 0, { perm: 0o2711, uid: 1000, gid: 42 }));
  const dev = newDir();
  dev.children!.set("null", { ...baseNode("char", 0o666), devMajor: 1, devMinor: 3 });
  dev.children!.set("sda", { ...baseNode("block", 0o660), devMajor: 8, devMinor: 0, gid: 6 });
  dev.children!.set("initctl", baseNode("fifo", 0o600));
  const names = newDir();
  for (const n of ["z", "Z", "a", "ä", "é", "日本", WIDE, EMOJI, "a.b", "a-b", LONG_NAME]) names.children!.set(n, fileNode([], 0));
  let deep = newDir();
  const deepTop = deep;
  for (let i = 1; i < DEEP; i++) {
    const next = newDir();
    deep.children!.set("d", next);
    deep = next;
  }
  deep.children!.set("bottom", fileNode([2], 10));
  const root = newDir({ mtime: 5 });
  root.children!.set("bin", bin);
  root.children!.set("dev", dev);
  root.children!.set("names", names);
  root.children!.set("deep", deepTop);
  root.children!.set("big", fileNode([1, 2], CHUNK + 10, { uid: 65534, gid: 65534 }));
  root.children!.set("tmp", newDir({ perm: 0o1777 }));
  root.children!.set("sh-link", { ...baseNode("symlink", 0o777), target: "bin/sh", size: 6 });
  root.children!.set("abs-link", { ...baseNode("symlink", 0o777), target: "/does/not/exist", size: 15 });
  root.children!.set("..hidden", fileNode([], 0)); // its name gives the tests below the bytes "." and ".."
  return {
    kind: "image",
    codec: 0,
    chunkShift: SHIFT,
    platform: "linux/amd64",
    blobs: [{ dataDigest: sha("blob"), storedSize: total, layerDigest: `sha256:${"ab".repeat(32)}` }],
    chunks,
    root,
  };
}

const bytesOf = (m: BootstrapModel = sampleModel()) => encodeBootstrap(m);

describe("bootstrap round trip", () => {
  it("decodes what it encodes, and re-encodes the decoded tree to the same bytes", () => {
    const bytes = bytesOf();
    const b = Bootstrap.decode(bytes);
    expect(b.kind).toBe("image");
    expect(b.platform).toBe("linux/amd64");
    expect(b.chunkSize).toBe(CHUNK);
    expect(b.blob(0).layerDigest).toBe(`sha256:${"ab".repeat(32)}`);
    expect(encodeBootstrap(b.toModel())).toEqual(bytes);
  });

  it("finds a chunk by the sha256 hex of its content, the lowest index when named twice", () => {
    const m = sampleModel();
    m.chunks.push({ ...m.chunks[2]!, blob: 0 }); // chunk 4: the content of chunk 2 again
    const b = Bootstrap.decode(encodeBootstrap(m));
    const hex = (i: number) => Buffer.from(m.chunks[i]!.digest).toString("hex");
    expect([0, 1, 2, 3].map((i) => b.chunkIndexOf(hex(i)))).toEqual([0, 1, 2, 3]);
    expect(b.chunkIndexOf(hex(4))).toBe(2);
    expect(b.chunkIndexOf("00".repeat(32))).toBeNull();
    expect(b.chunkIndexOf(hex(0).toUpperCase())).toBeNull();
  });

  it("tells apart chunks whose digests share their first bytes, and refuses what is not a digest it holds", () => {
    const m = sampleModel();
    const twin = new Uint8Array(m.chunks[1]!.digest);
    twin[31]! ^= 0xff; // the same first 31 bytes as chunk 1's digest
    m.chunks.push({ ...m.chunks[1]!, digest: twin });
    const b = Bootstrap.decode(encodeBootstrap(m));
    const hex = (d: Uint8Array) => Buffer.from(d).toString("hex");
    expect(b.chunkIndexOf(hex(m.chunks[1]!.digest))).toBe(1);
    expect(b.chunkIndexOf(hex(twin))).toBe(m.chunks.length - 1);
    const third = new Uint8Array(twin);
    third[20]! ^= 0x01;
    expect(b.chunkIndexOf(hex(third))).toBeNull();
    for (const bad of ["", "zz", hex(twin).slice(0, 12), `${hex(twin)}00`]) expect(b.chunkIndexOf(bad)).toBeNull();
  });

  it("encodes equal trees equally whatever order their children were added in", () => {
    const a = sampleModel();
    const b = sampleModel();
    for (const dir of [b.root, b.root.children!.get("names")!]) dir.children = new Map([...dir.children!].reverse());
    expect(encodeBootstrap(b)).toEqual(encodeBootstrap(a));
  });

  it("keeps every attribute of every node type", () => {
    const b = Bootstrap.decode(bytesOf());
    const at = (p: string) => b.inode(b.lookup(p)!);
    expect(at("/")).toMatchObject({ index: 0, type: "dir", mode: L.S_IFDIR | 0o755, mtime: 5 });
    expect(at("/bin/sh")).toMatchObject({ type: "file", mode: L.S_IFREG | 0o755, size: 100, mtime: 1_700_000_000, mtimeNsec: 123_456_789 });
    expect(at("/bin/su").mode).toBe(L.S_IFREG | 0o4755);
    expect(at("/bin/sgid")).toMatchObject({ mode: L.S_IFREG | 0o2711, uid: 1000, gid: 42, size: 0 });
    expect(at("/tmp").mode).toBe(L.S_IFDIR | 0o1777);
    expect(at("/dev/null")).toMatchObject({ type: "char", mode: L.S_IFCHR | 0o666, devMajor: 1, devMinor: 3, size: 0 });
    expect(at("/dev/sda")).toMatchObject({ type: "block", mode: L.S_IFBLK | 0o660, devMajor: 8, devMinor: 0, gid: 6 });
    expect(at("/dev/initctl")).toMatchObject({ type: "fifo", mode: L.S_IFIFO | 0o600 });
    expect(at("/sh-link")).toMatchObject({ type: "symlink", size: 6 });
    expect(b.readlink(b.lookup("/sh-link")!)).toBe("bin/sh");
    expect(b.readlink(b.lookup("abs-link")!)).toBe("/does/not/exist");
    expect(at("/big")).toMatchObject({ size: CHUNK + 10, uid: 65534, gid: 65534 });
    expect(b.chunks(b.lookup("/big")!).map((c) => c.size)).toEqual([CHUNK, 10]);
    expect(b.chunkIndexes(b.lookup("/big")!)).toEqual([1, 2]);
    expect(b.chunk(3)).toMatchObject({ blob: 0, compressed: false, storedOffset: 100 + CHUNK + 10, storedSize: 7, size: 7 });
    expect(b.chunk(3).digest).toEqual(sha("chunk 3"));
  });

  it("shares one inode among a hardlink's names and counts its links", () => {
    const b = Bootstrap.decode(bytesOf());
    const sh = b.lookup("/bin/sh")!;
    expect(b.lookup("/bin/sh-again")).toBe(sh);
    expect(b.inode(sh).nlink).toBe(2);
    expect(b.inode(b.lookup("/bin/su")!).nlink).toBe(1);
    // Directories: 2 + subdirectories.
    expect(b.inode(0).nlink).toBe(2 + 5);
    expect(b.inode(b.lookup("/bin")!).nlink).toBe(2);
    expect(b.inode(b.lookup("/deep")!).nlink).toBe(3);
  });

  it("keeps xattrs byte for byte, sorted by name, only on their inode", () => {
    const b = Bootstrap.decode(bytesOf());
    const x = b.xattrs(b.lookup("/bin/sh")!);
    expect([...x.keys()]).toEqual(["security.capability", "user.comment"]);
    expect(x.get("security.capability")).toEqual(new Uint8Array([1, 0, 0, 2, 0, 0xff, 0, 0]));
    expect(new TextDecoder().decode(x.get("user.comment"))).toBe("hello");
    expect(b.xattrs(b.lookup("/bin/su")!).size).toBe(0);
    expect(b.xattrs(0).size).toBe(0);
  });

  it("knows each entry's directory: the root its own, a hardlinked file its first name's", () => {
    const b = Bootstrap.decode(bytesOf());
    expect(b.parentOf(0)).toBe(0);
    expect(b.parentOf(b.lookup("/bin")!)).toBe(0);
    expect(b.parentOf(b.lookup("/bin/su")!)).toBe(b.lookup("/bin"));
    expect(b.parentOf(b.lookup("/bin/sh")!)).toBe(b.lookup("/bin"));
    expect(b.parentOf(b.lookup(`/names/${LONG_NAME}`)!)).toBe(b.lookup("/names"));
    const bottom = b.lookup("/deep" + "/d".repeat(DEEP - 1) + "/bottom")!;
    expect(b.parentOf(bottom)).toBe(b.lookup("/deep" + "/d".repeat(DEEP - 1)));
    // Every entry is among its directory's children.
    for (let i = 1; i < b.inodeCount; i++) expect(b.childInodes(b.parentOf(i))).toContain(i);
  });

  it("sorts entries by UTF-8 bytes and finds every name, 255-byte and multi-byte ones included", () => {
    const b = Bootstrap.decode(bytesOf());
    const dir = b.lookup("/names")!;
    const names = b.readdir(dir).map((e) => e.name);
    const byBytes = [...names].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(names).toEqual(byBytes);
    expect(names.indexOf(WIDE)).toBeLessThan(names.indexOf(EMOJI)); // not JavaScript's string order
    expect(names).toHaveLength(11);
    for (const n of names) expect(b.child(dir, n)).not.toBeNull();
    // The same entries' inodes without their names, in the same order.
    expect(b.childInodes(dir)).toEqual(b.readdir(dir).map((e) => e.inode));
    expect(() => b.childInodes(b.lookup("/bin/su")!)).toThrow(/not a directory/);
    expect(b.lookup(`/names/${LONG_NAME}`)).not.toBeNull();
    expect(utf8(LONG_NAME)).toHaveLength(255);
    for (const missing of ["", "b", "ä".normalize("NFD"), "日", `${LONG_NAME}x`, "zz", "A"]) expect(b.child(dir, missing)).toBeNull();
    expect(b.lookup("/names/z/deeper")).toBeNull();
    expect(b.lookup("/nope")).toBeNull();
    expect(b.lookup("/deep" + "/d".repeat(DEEP - 1) + "/bottom")).not.toBeNull();
    expect(b.lookup("//bin/./sh")).toBe(b.lookup("bin/sh"));
  });

  it("walks depth first in name order, every hardlink name included", () => {
    const b = Bootstrap.decode(bytesOf());
    const paths = [...b.walk()].map((e) => e.path);
    // The expected order, computed independently from the model.
    const expected: string[] = ["/"];
    const visit = (dir: FsNode, prefix: string) => {
      const sorted = [...dir.children!.keys()].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
      for (const name of sorted) {
        const child = dir.children!.get(name)!;
        expected.push(`${prefix}/${name}`);
        if (child.type === "dir") visit(child, `${prefix}/${name}`);
      }
    };
    visit(sampleModel().root, "");
    expect(paths).toEqual(expected);
    expect(paths.filter((p) => p.startsWith("/bin/sh"))).toEqual(["/bin/sh", "/bin/sh-again"]);
    // Inode numbers follow the same depth-first order (first names only).
    const firsts = [...b.walk()].map((e) => e.inode).filter((i, k, all) => all.indexOf(i) === k);
    expect(firsts).toEqual(firsts.map((_, k) => k));
  });

  it("round-trips a layer bootstrap's flags: whiteouts, opaque and implicit dirs, hardlink references", () => {
    const root = newDir({ implicit: true });
    const etc = newDir({ opaque: true });
    etc.children!.set("gone", baseNode("whiteout", 0));
    etc.children!.set("passwd-link", { ...baseNode("hardlink-ref", 0), target: "etc/passwd", size: 10 });
    root.children!.set("etc", etc);
    root.children!.set("usr", newDir({ implicit: true }));
    const model: BootstrapModel = { kind: "layer", codec: 1, chunkShift: 20, platform: "", blobs: [{ dataDigest: sha("x"), storedSize: 0, layerDigest: "sha256:x" }], chunks: [], root };
    const b = Bootstrap.decode(encodeBootstrap(model));
    expect(b.kind).toBe("layer");
    expect(b.codec).toBe(1);
    expect(b.inode(0).flags).toBe(L.FLAG_IMPLICIT);
    expect(b.inode(b.lookup("/etc")!).flags).toBe(L.FLAG_OPAQUE);
    expect(b.inode(b.lookup("/etc/gone")!)).toMatchObject({ type: "whiteout", flags: L.FLAG_WHITEOUT, mode: L.S_IFCHR });
    expect(b.inode(b.lookup("/etc/passwd-link")!)).toMatchObject({ type: "hardlink-ref", flags: L.FLAG_HARDLINK_REF });
    expect(b.readlink(b.lookup("/etc/passwd-link")!)).toBe("etc/passwd");
    expect(encodeBootstrap(b.toModel())).toEqual(encodeBootstrap(model));
  });

  it("refuses to encode invalid names and chunk indexes", () => {
    for (const name of [".", "..", "a/b", "", "a\0b", "x".repeat(256)]) {
      const m = sampleModel();
      m.root.children!.set(name, fileNode([], 0));
      expect(() => encodeBootstrap(m), JSON.stringify(name)).toThrow(/invalid entry name/);
    }
    const m = sampleModel();
    m.root.children!.set("bad", fileNode([99], 1));
    expect(() => encodeBootstrap(m)).toThrow(/chunk index/);
  });
});

// ---- corruption ----

/** Section offsets and record locations of encoded bytes, read as a reader would. */
function layoutOf(bytes: Uint8Array) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (o: number) => view.getUint32(o, true);
  const counts = L.readCounts(view);
  const at = L.sectionOffsets(counts);
  const b = Bootstrap.decode(bytes);
  const inode = (path: string) => at.inodes + b.lookup(path)! * L.INODE_RECORD_SIZE;
  /** The dirent record naming `name` in directory `dir`. */
  const dirent = (dir: string, name: string) => {
    const d = inode(dir);
    const first = u32(d + 40);
    const k = b.readdir(b.lookup(dir)!).findIndex((e) => e.name === name);
    if (k < 0) throw new Error(`no ${name} in ${dir}`);
    return at.dirents + (first + k) * L.DIRENT_RECORD_SIZE;
  };
  return { view, counts, at, b, inode, dirent, u32 };
}

/** Applies `mutate` to a fresh copy of the sample's bytes and expects decode to refuse the result. */
function expectRejected(mutate: (bytes: Uint8Array, l: ReturnType<typeof layoutOf>) => Uint8Array | void, message: RegExp) {
  const bytes = bytesOf();
  const l = layoutOf(bytes);
  const out = mutate(bytes, l) ?? bytes;
  let error: unknown;
  try {
    Bootstrap.decode(out);
  } catch (err) {
    error = err;
  }
  expect(error, "decode should have failed").toBeInstanceOf(BootstrapError);
  expect((error as Error).message).toMatch(message);
}

describe("bootstrap validation", () => {
  it("refuses truncated and extended buffers", () => {
    expectRejected((b) => b.slice(0, b.length - 1), /does not match/);
    expectRejected((b) => new Uint8Array([...b, 0]), /does not match/);
    expectRejected((b) => b.slice(0, 63), /shorter than the header/);
    expectRejected(() => new Uint8Array(0), /shorter than the header/);
    // A count that makes the described size larger than the buffer.
    expectRejected((_b, l) => l.view.setUint32(L.H.inodeCount, l.counts.inodeCount + 1, true), /does not match/);
  });

  it("refuses a bad magic, version, kind or chunk size", () => {
    expectRejected((b) => void (b[3] = 0x46), /bad magic/);
    expectRejected((_b, l) => l.view.setUint16(L.H.version, 2, true), /unsupported format version 2/);
    expectRejected((b) => void (b[L.H.kind] = 3), /unknown kind/);
    expectRejected((b) => void (b[L.H.chunkShift] = 15), /chunk size/);
    expectRejected((b) => void (b[L.H.chunkShift] = 25), /chunk size/);
  });

  it("refuses string references outside the string table", () => {
    expectRejected((_b, l) => l.view.setUint32(l.dirent("/bin", "sh") + 0, l.counts.stringsSize, true), /outside the string table/);
    expectRejected((_b, l) => l.view.setUint16(l.dirent("/bin", "sh") + 4, 0xffff, true), /(outside the string table|length)/);
    expectRejected((_b, l) => l.view.setUint32(l.inode("/sh-link") + 40, l.counts.stringsSize - 2, true), /outside the string table/);
    expectRejected((_b, l) => l.view.setUint32(L.H.platformOffset, l.counts.stringsSize, true), /platform points outside/);
    expectRejected((_b, l) => l.view.setUint32(l.at.blobs + 44, 0xffffffff, true), /outside the string table/);
  });

  it("refuses chunk references and blob indexes out of range", () => {
    expectRejected((_b, l) => {
      const first = l.u32(l.inode("/big") + 40);
      l.view.setUint32(l.at.chunkRefs + first * L.CHUNK_REF_SIZE, l.counts.chunkCount, true);
    }, /names chunk 4 of 4/);
    expectRejected((_b, l) => l.view.setUint32(l.inode("/big") + 44, 0x10000, true), /chunks out of range/);
    expectRejected((_b, l) => l.view.setUint32(l.at.chunks + 2 * L.CHUNK_RECORD_SIZE + 32, 1, true), /names blob 1 of 1/);
  });

  it("refuses unsorted and duplicate names", () => {
    expectRejected((_b, l) => {
      // Swap the names (not the inodes) of two neighbours.
      const a = l.dirent("/bin", "sh");
      const c = l.dirent("/bin", "su");
      const [ao, al, co, cl] = [l.u32(a), l.view.getUint16(a + 4, true), l.u32(c), l.view.getUint16(c + 4, true)];
      l.view.setUint32(a, co, true);
      l.view.setUint16(a + 4, cl, true);
      l.view.setUint32(c, ao, true);
      l.view.setUint16(c + 4, al, true);
    }, /not sorted and unique/);
    expectRejected((_b, l) => {
      const a = l.dirent("/bin", "sh");
      const c = l.dirent("/bin", "sh-again");
      l.view.setUint32(c, l.u32(a), true);
      l.view.setUint16(c + 4, l.view.getUint16(a + 4, true), true);
    }, /not sorted and unique/);
  });

  it("refuses names '.', '..', empty, or containing '/'", () => {
    // "..hidden" and the symlink target "bin/sh" are in the string table; point a name into them.
    const nameAt = (l: ReturnType<typeof layoutOf>, text: string, length: number) => {
      const bytes = l.b.bytes.subarray(l.at.strings);
      const offset = Buffer.from(bytes).indexOf(Buffer.from(text));
      if (offset < 0) throw new Error(`${text} not in the string table`);
      const d = l.dirent("/", "tmp");
      l.view.setUint32(d, offset, true);
      l.view.setUint16(d + 4, length, true);
    };
    expectRejected((_b, l) => nameAt(l, "..hidden", 1), /named \. or \.\./);
    expectRejected((_b, l) => nameAt(l, "..hidden", 2), /named \. or \.\./);
    expectRejected((_b, l) => nameAt(l, "..hidden", 0), /length 0/);
    expectRejected((_b, l) => nameAt(l, "bin/sh", 6), /contains '\/'/);
  });

  it("refuses cycles: an entry pointing back at its parent, an ancestor or the root", () => {
    expectRejected((_b, l) => l.view.setUint32(l.dirent("/bin", "sh") + 8, l.b.lookup("/bin")!, true), /names but link count|points backwards/);
    expectRejected((_b, l) => l.view.setUint32(l.dirent("/deep/d/d", "d") + 8, l.b.lookup("/deep")!, true), /names but link count|points backwards/);
    expectRejected((_b, l) => l.view.setUint32(l.dirent("/deep/d", "d") + 8, 0, true), /points at inode 0/);
    expectRejected((_b, l) => l.view.setUint32(l.dirent("/", "tmp") + 8, l.counts.inodeCount, true), /points at inode/);
  });

  it("refuses a wrong link count", () => {
    expectRejected((_b, l) => l.view.setUint32(l.inode("/bin/sh") + 12, 1, true), /2 names but link count 1/);
    expectRejected((_b, l) => l.view.setUint32(l.inode("/bin/su") + 12, 2, true), /1 names but link count 2/);
  });

  it("refuses a file whose size is not the sum of its chunks, or with a short chunk before its last", () => {
    expectRejected((_b, l) => l.view.setBigUint64(l.inode("/big") + 16, BigInt(CHUNK + 11), true), /size 65547 != its chunks' 65546/);
    expectRejected((_b, l) => l.view.setBigUint64(l.inode("/bin/su") + 16, 0n, true), /size 0 != its chunks' 7/);
    expectRejected((_b, l) => {
      // /big's chunks become [chunk 2 (10 bytes), chunk 2]: short before last.
      const first = l.u32(l.inode("/big") + 40);
      l.view.setUint32(l.at.chunkRefs + first * L.CHUNK_REF_SIZE, 2, true);
    }, /short chunk before its last/);
  });

  it("refuses a chunk outside its blob, an empty or oversized chunk, a wrong uncompressed stored size", () => {
    const rec = (l: ReturnType<typeof layoutOf>, i: number) => l.at.chunks + i * L.CHUNK_RECORD_SIZE;
    expectRejected((_b, l) => l.view.setBigUint64(rec(l, 3) + 40, BigInt(100 + CHUNK + 10 + 1), true), /chunk 3 lies outside its blob/);
    expectRejected((_b, l) => l.view.setBigUint64(l.at.blobs + 32, BigInt(100), true), /lies outside its blob/);
    expectRejected((_b, l) => l.view.setUint32(rec(l, 0) + 52, 0, true), /chunk 0 has size 0/);
    expectRejected((_b, l) => l.view.setUint32(rec(l, 0) + 52, CHUNK + 1, true), /chunk 0 has size/);
    expectRejected((_b, l) => l.view.setUint32(rec(l, 0) + 48, 99, true), /stored size 99 != 100/);
  });

  it("refuses a compressed chunk not smaller than its bytes, or in a bootstrap without a codec", () => {
    const rec = (l: ReturnType<typeof layoutOf>, i: number) => l.at.chunks + i * L.CHUNK_RECORD_SIZE;
    const compressed = (l: ReturnType<typeof layoutOf>, i: number) => l.view.setUint32(rec(l, i) + 36, L.CHUNK_COMPRESSED, true);
    expectRejected((b, l) => void (compressed(l, 0), (b[L.H.codec] = 1)), /compressed chunk 0 has stored size 100 for 100 bytes/);
    expectRejected((b, l) => {
      // A 4 GiB stored length inside a blob that claims 1 PiB: only the chunk size bounds it.
      b[L.H.codec] = 1;
      compressed(l, 0);
      l.view.setBigUint64(l.at.blobs + 32, 2n ** 50n, true);
      l.view.setUint32(rec(l, 0) + 48, 0xfffffff0, true);
    }, /compressed chunk 0 has stored size 4294967280 for 100 bytes/);
    expectRejected((b, l) => void (compressed(l, 0), (b[L.H.codec] = 1), l.view.setUint32(rec(l, 0) + 48, 0, true)), /stored size 0 for 100/);
    expectRejected((_b, l) => {
      compressed(l, 0);
      l.view.setUint32(rec(l, 0) + 48, 50, true);
    }, /chunk 0 is compressed in a bootstrap without a codec/);
  });

  it("refuses a layer digest that is not a digest: readers put it in a URL path", () => {
    for (const bad of ["../../../x", "sha256:ab/../../x", "sha256:%2e%2e%2fx", "sha256:ab?x=1", "sha256:ab#x", ""]) {
      const m = sampleModel();
      m.blobs[0]!.layerDigest = bad;
      let error: unknown;
      try {
        Bootstrap.decode(encodeBootstrap(m));
      } catch (err) {
        error = err;
      }
      expect(error, bad).toBeInstanceOf(BootstrapError);
      expect((error as Error).message, bad).toMatch(/blob 0 layer digest .* is not a digest/);
    }
  });

  it("refuses unknown type bits, unknown flags, and layer flags in an image", () => {
    expectRejected((_b, l) => l.view.setUint32(l.inode("/bin/su"), 0o140755, true), /file type bits/);
    expectRejected((_b, l) => l.view.setUint32(l.inode("/bin/su") + 36, 1 << 7, true), /unknown flags/);
    expectRejected((_b, l) => l.view.setUint32(l.inode("/tmp") + 36, L.FLAG_OPAQUE, true), /layer flags/);
  });

  it("refuses xattrs out of inode order and unreachable inodes", () => {
    expectRejected((_b, l) => {
      // Two xattrs on /bin/sh: moving the second to inode 0 breaks the order.
      l.view.setUint32(l.at.xattrs + L.XATTR_RECORD_SIZE, 0, true);
    }, /xattr 1 is out of order/);
    expectRejected((_b, l) => {
      // /tmp's entry count is 0, so bump the root's: the extra entry is the next directory's first.
      l.view.setUint32(l.inode("/") + 44, l.u32(l.inode("/") + 44) - 1, true);
    }, /not in inode order|unreachable|names but link count/);
  });
});

describe("entry names", () => {
  it("takes 1–255 bytes of UTF-8, whatever the characters", () => {
    const valid = (name: string) => [isValidName(name), new TextEncoder().encode(name).length];
    expect(valid("a".repeat(255))).toEqual([true, 255]);
    expect(valid("a".repeat(256))).toEqual([false, 256]);
    // Three bytes a unit: 85 units fill the bound exactly, 86 pass it.
    expect(valid("€".repeat(85))).toEqual([true, 255]);
    expect(valid("€".repeat(86))).toEqual([false, 258]);
    // Four bytes a pair of units.
    expect(valid("😀".repeat(63))).toEqual([true, 252]);
    expect(valid("😀".repeat(64))).toEqual([false, 256]);
    for (const name of ["", ".", "..", "a/b", "a\0b"]) expect(isValidName(name)).toBe(false);
  });
});
