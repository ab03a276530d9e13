// convert → extract against GNU tar as the oracle. A three-layer image (gzip'd GNU tar; plain PAX tar
// with xattrs, long and UTF-8 names; gzip'd tar with a hardlink into a lower layer) is built from
// directories on disk; the oracle extracts the same layers in order with `tar -xp` as root, applying
// the whiteout rules itself; `skiff extract` must produce the same tree, attribute for attribute.
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, cpSync, linkSync, lchownSync, lutimesSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync, existsSync, openSync, writeSync, closeSync, readSync } from "node:fs";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MT, OciLayout, Prng } from "./harness/images.ts";
import { diffTrees, diffIdOf, sh, skiff, snapshot, writeImage, type Layer, type TreeEntry } from "./harness/rootfs.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

const CHUNK = 64 * 1024;
const T0 = 1_700_000_000;
const prng = new Prng("convert-roundtrip");
const MULTI = prng.bytes(3 * CHUNK + 1234);
const DUP = prng.bytes(2 * CHUNK + 7);
const REPEAT = Buffer.concat([prng.bytes(CHUNK)].flatMap((b) => [b, b, b.subarray(0, 99)]));
const BUSYBOX = prng.bytes(100_000);
const LONG_DIR = "a".repeat(200);
const LONG_NAME = "b".repeat(255);
const hasSetfattr = spawnSync("sh", ["-c", "command -v setfattr"]).status === 0;

interface Attrs {
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
}

/** Builds a layer's source directory: every call sets owner, then mode (chown clears suid), then mtime. */
class Src {
  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true });
    chmodSync(root, 0o755);
  }
  #meta(p: string, a: Attrs, def: number) {
    chownSync(p, a.uid ?? 0, a.gid ?? 0);
    chmodSync(p, a.mode ?? def);
    utimesSync(p, a.mtime ?? T0, a.mtime ?? T0);
  }
  dir(rel: string, a: Attrs = {}) {
    const p = join(this.root, rel);
    mkdirSync(p, { recursive: true });
    this.#meta(p, a, 0o755);
  }
  file(rel: string, content: string | Uint8Array, a: Attrs = {}) {
    const p = join(this.root, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, content);
    this.#meta(p, a, 0o644);
  }
  symlink(rel: string, target: string, a: Attrs = {}) {
    const p = join(this.root, rel);
    mkdirSync(dirname(p), { recursive: true });
    symlinkSync(target, p);
    lchownSync(p, a.uid ?? 0, a.gid ?? 0);
    lutimesSync(p, a.mtime ?? T0, a.mtime ?? T0);
  }
  hardlink(rel: string, target: string) {
    linkSync(join(this.root, target), join(this.root, rel));
  }
  node(rel: string, kind: "c" | "b" | "p", a: Attrs & { major?: number; minor?: number } = {}) {
    const p = join(this.root, rel);
    mkdirSync(dirname(p), { recursive: true });
    sh("mknod", kind === "p" ? [p, "p"] : [p, kind, String(a.major), String(a.minor)]);
    this.#meta(p, a, 0o644);
  }
  xattr(rel: string, name: string, value: Buffer) {
    sh("python3", ["-c", "import os,sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]))", join(this.root, rel), name, value.toString("hex")]);
  }
  /** Parent directories made by the calls above get a fixed mtime too (for stable layers). */
  settle() {
    const visit = (p: string) => {
      for (const e of readdirSync(p, { withFileTypes: true })) if (e.isDirectory()) visit(join(p, e.name));
      utimesSync(p, T0, T0);
    };
    visit(this.root);
  }
}

function tarOf(src: Src, format: "gnu" | "pax", out: string): Buffer {
  const args = ["-c", "-f", out, `--format=${format}`, "--sort=name", "--numeric-owner", "-C", src.root];
  if (format === "pax") args.push("--xattrs", "--xattrs-include=*", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime");
  sh("tar", [...args, "."]);
  return readFileSync(out);
}

const layer = (tar: Buffer, gzip: boolean): Layer =>
  gzip ? { bytes: gzipSync(tar, { level: 6 }), mediaType: MT.layerGzip, diffId: diffIdOf(tar) } : { bytes: tar, mediaType: MT.layerTar, diffId: diffIdOf(tar) };

/** The oracle: GNU tar extracts each layer in order; whiteouts and type changes are applied first. */
function oracleApply(oracle: string, src: Src, tarPath: string): void {
  const walk = (rel: string) => {
    const names = readdirSync(join(src.root, rel));
    if (names.includes(".wh..wh..opq") && existsSync(join(oracle, rel))) {
      for (const n of readdirSync(join(oracle, rel))) rmSync(join(oracle, rel, n), { recursive: true, force: true });
    }
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      if (n === ".wh..wh..opq") continue;
      if (n.startsWith(".wh.")) {
        rmSync(join(oracle, rel, n.slice(4)), { recursive: true, force: true });
        continue;
      }
      const srcIsDir = statSync(join(src.root, r), { throwIfNoEntry: false })?.isDirectory() && !isSymlink(join(src.root, r));
      const have = join(oracle, r);
      if (existsOrLink(have) && (isRealDir(have) !== Boolean(srcIsDir))) rmSync(have, { recursive: true, force: true });
      if (srcIsDir) walk(r);
    }
  };
  walk("");
  sh("tar", ["-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", tarPath, "-C", oracle]);
  sh("find", [oracle, "-name", ".wh.*", "-delete"]);
}
const isSymlink = (p: string) => spawnSync("test", ["-L", p]).status === 0;
const existsOrLink = (p: string) => existsSync(p) || isSymlink(p);
const isRealDir = (p: string) => !isSymlink(p) && (statSync(p, { throwIfNoEntry: false })?.isDirectory() ?? false);

interface InspectJson {
  kind: string;
  platform: string;
  chunkSize: number;
  codec: string;
  blobs: { layerDigest: string; dataDigest: string; storedSize: number }[];
  entries: { path: string; type: string; mode: string; uid: number; gid: number; nlink: number; size: number; mtime: number; mtimeNsec: number; target?: string; devMajor?: number; devMinor?: number; xattrs?: Record<string, string>; chunks?: { digest: string; blob: number; offset: number; storedOffset: number; storedSize: number; size: number; compressed: boolean }[] }[];
}

function inspectJson(dir: string, ...extra: string[]): InspectJson {
  const r = skiff("inspect", dir, "--json", ...extra);
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as InspectJson;
}

/** File mtimes may lose a few hundred nanoseconds in utimes(2)'s double seconds: compare to the microsecond. */
function compareTrees(want: Map<string, TreeEntry>, got: Map<string, TreeEntry>): string[] {
  const round = (m: Map<string, TreeEntry>) => new Map([...m].map(([p, e]) => [p, { ...e, mtimeNs: e.mtimeNs === undefined ? undefined : (e.mtimeNs + 500n) / 1000n }]));
  return diffTrees(round(want), round(got));
}

let work: string;
let layoutDir: string;
let layerBlobs: { digest: string; size: number }[];
let oracle: string;
let out: string;
let dest: string;
let convertOutput: string;
let oracleTree: Map<string, TreeEntry>;

beforeAll(() => {
  work = tempDir("roundtrip");

  // Layer 1: gzip'd GNU tar with every node type.
  const s1 = new Src(join(work, "src1"));
  s1.dir("etc");
  s1.file("etc/hostname", "skiff-test\n");
  s1.file("etc/empty", "");
  s1.file("etc/old.conf", "old\n");
  s1.symlink("etc/abs", "/usr/bin/busybox");
  s1.symlink("etc/dangling", "/nonexistent/file");
  s1.dir("usr/bin");
  s1.file("usr/bin/busybox", BUSYBOX, { mode: 0o755, mtime: T0 + 1 });
  s1.hardlink("usr/bin/ls", "usr/bin/busybox");
  s1.symlink("usr/bin/sh", "busybox");
  s1.file("usr/bin/su", "su\n", { mode: 0o4755 });
  s1.file("usr/bin/wall", "wall\n", { mode: 0o2755, gid: 5 });
  s1.file("data/exact64k", prng.bytes(CHUNK));
  s1.file("data/multi", MULTI, { mtime: T0 + 100 });
  s1.file("data/dup-a", DUP);
  s1.file("data/dup-b", DUP);
  s1.file("data/repeat", REPEAT);
  s1.file("usr/share/doc/README", "compressible text, said again and again\n".repeat(5000));
  s1.node("dev/null", "c", { major: 1, minor: 3, mode: 0o666 });
  s1.node("dev/loop0", "b", { major: 7, minor: 0, mode: 0o660, gid: 6 });
  s1.node("run/initctl", "p", { mode: 0o600 });
  s1.dir("tmp", { mode: 0o1777 });
  s1.dir("var/mail", { mode: 0o2775, gid: 8 });
  s1.file("var/cache/x", "x");
  s1.file("var/cache/sub/z", "z");
  s1.file("opt/legacy/a", "a");
  s1.file("opt/legacy/b/c", "c");
  s1.file("opt/keep", "keep");
  s1.dir("home/user", { mode: 0o700, uid: 1000, gid: 1000 });
  s1.file("home/user/f", "f", { uid: 1000, gid: 100, mode: 0o640 });
  s1.file("srv/nobody", "n", { uid: 65534, gid: 65534 });
  s1.file("srv/big-ids", "b", { uid: 200_000, gid: 300_000 });
  // Beyond 7 octal digits: GNU tar writes base-256 numbers.
  s1.file("srv/huge-ids", "h", { uid: 3_000_000, gid: 4_000_000 });
  // GNU long names (././@LongLink): a long path, a long symlink target, a hardlink to a long path.
  s1.file(`gnu-long/${"c".repeat(150)}/${"d".repeat(120)}`, "gnu long name");
  s1.symlink("gnu-long/symlink", `/${"t".repeat(200)}/target`);
  s1.hardlink("gnu-long/zz-hardlink", `gnu-long/${"c".repeat(150)}/${"d".repeat(120)}`);
  s1.file("replace/fileToDir", "file");
  s1.file("replace/dirToFile/inner", "inner");
  s1.file("lib/a-target.bin", "target content\n");
  s1.hardlink("lib/b-link.bin", "lib/a-target.bin");
  s1.settle();

  // Layer 2: plain PAX tar: whiteouts, an opaque directory, file → dir, xattrs, long and UTF-8 names.
  const s2 = new Src(join(work, "src2"));
  s2.file("etc/.wh.old.conf", "");
  s2.file("opt/.wh.legacy", "");
  s2.file("var/cache/.wh..wh..opq", "");
  s2.file("var/cache/new", "new cache entry\n");
  s2.dir("replace/fileToDir", { mode: 0o750 });
  s2.file("replace/fileToDir/child", "child");
  s2.file(`long/${LONG_DIR}/${LONG_NAME}`, "long name\n");
  s2.file("utf8/ünïcödé", "u");
  s2.file("utf8/日本語.txt", "j");
  s2.file("xattr/file", "with xattrs", { mtime: T0 + 0.123456 });
  s2.xattr("xattr/file", "user.mime", Buffer.from("text/plain"));
  s2.xattr("xattr/file", "user.bin", Buffer.from([0, 1, 0xff]));
  s2.dir("home/user", { mode: 0o750, uid: 1000, gid: 1000 });
  s2.file("home/user/g", "g", { uid: 1000, gid: 1000 });
  s2.settle();

  // Layer 3: gzip'd GNU tar: whiteout of a hardlink's target, dir → file, a changed file, and a
  // hardlink to a lower layer's file (appended by hand: tar only writes links to what it archived).
  const s3 = new Src(join(work, "src3"));
  s3.file("lib/.wh.a-target.bin", "");
  s3.file("replace/dirToFile", "now a file\n");
  s3.file("etc/hostname", "changed\n", { mode: 0o600, mtime: T0 + 5 });
  s3.dir("usr/bin");
  s3.settle();

  const tars = [tarOf(s1, "gnu", join(work, "l1.tar")), tarOf(s2, "pax", join(work, "l2.tar")), tarOf(s3, "gnu", join(work, "l3.tar"))];
  sh("python3", [
    "-c",
    "import tarfile,sys\nt=tarfile.open(sys.argv[1],'a',format=tarfile.GNU_FORMAT)\ni=tarfile.TarInfo('./usr/bin/ls2')\ni.type=tarfile.LNKTYPE\ni.linkname='./usr/bin/busybox'\ni.mtime=1700000000\nt.addfile(i)\nt.close()",
    join(work, "l3.tar"),
  ]);
  tars[2] = readFileSync(join(work, "l3.tar"));

  layoutDir = join(work, "layout");
  const layout = new OciLayout(layoutDir);
  const { layers } = writeImage(layout, "test", [layer(tars[0]!, true), layer(tars[1]!, false), layer(tars[2]!, true)]);
  layerBlobs = layers.map((l) => ({ digest: l.digest, size: l.size }));

  oracle = join(work, "oracle");
  mkdirSync(oracle);
  oracleApply(oracle, s1, join(work, "l1.tar"));
  oracleApply(oracle, s2, join(work, "l2.tar"));
  oracleApply(oracle, s3, join(work, "l3.tar"));
  oracleTree = snapshot(oracle);

  out = join(work, "out");
  const c = skiff("convert", `${layoutDir}:test`, "--out", out, "--chunk-size", "64k");
  convertOutput = c.stdout + c.stderr;
  if (c.code !== 0) throw new Error(`convert failed: ${convertOutput}`);
  dest = join(work, "dest");
  const x = skiff("extract", out, dest);
  if (x.code !== 0) throw new Error(`extract failed: ${x.stdout}${x.stderr}`);
}, 120_000);

afterAll(teardown);

describe("skiff convert + extract against GNU tar", () => {
  it("the oracle holds what the layers say (so the comparison below means something)", () => {
    const at = (p: string) => oracleTree.get(p);
    expect(at("etc/old.conf")).toBeUndefined();
    expect(at("opt/legacy")).toBeUndefined();
    expect(at("opt/keep")?.type).toBe("file");
    expect([...oracleTree.keys()].filter((p) => p.startsWith("var/cache/"))).toEqual(["var/cache/new"]);
    expect(at("replace/fileToDir")?.type).toBe("dir");
    expect(at("replace/dirToFile")?.type).toBe("file");
    expect(at("usr/bin/ls2")?.nlink).toBe(3);
    expect(at("lib/a-target.bin")).toBeUndefined();
    expect(at("lib/b-link.bin")).toMatchObject({ nlink: 1, size: 15 });
    expect(at("dev/null")).toMatchObject({ type: "char", rdev: "1,3", mode: "0o666" });
    expect(at("usr/bin/su")?.mode).toBe("0o4755");
    expect(at(`long/${LONG_DIR}/${LONG_NAME}`)?.type).toBe("file");
    expect([...oracleTree.keys()].some((p) => p.includes(".wh."))).toBe(false);
    expect(at("srv/huge-ids")).toMatchObject({ uid: 3_000_000, gid: 4_000_000 });
    expect(at("gnu-long/zz-hardlink")?.nlink).toBe(2);
  });

  it("extracts exactly the oracle's tree: types, modes, owners, sizes, contents, targets, links, devices, mtimes", () => {
    expect(compareTrees(oracleTree, snapshot(dest))).toEqual([]);
  });

  it("reports the conversion and keeps file mtimes to the microsecond from PAX headers", () => {
    expect(convertOutput).toMatch(/layers\s+3 \(3 converted/);
    expect(convertOutput).not.toMatch(/skipped/);
    const got = snapshot(dest).get("xattr/file")!;
    expect(Number(got.mtimeNs! / 1000n)).toBe((T0 * 1e6) + 123456);
  });

  it("lists every entry with chunks, xattrs, links and devices in inspect --json", () => {
    const j = inspectJson(out);
    expect(j).toMatchObject({ kind: "image", platform: "linux/amd64", chunkSize: CHUNK, codec: "none" });
    expect(j.blobs.map((b) => b.layerDigest)).toEqual(layerBlobs.map((l) => l.digest));
    const e = (p: string) => j.entries.find((x) => x.path === p)!;
    // The same paths as the oracle, no whiteout left.
    expect(j.entries.map((x) => x.path.slice(1)).sort()).toEqual([...oracleTree.keys()].sort());
    expect(e("/data/exact64k").chunks!.map((c) => c.size)).toEqual([CHUNK]);
    expect(e("/data/multi").chunks!.map((c) => [c.offset, c.size])).toEqual([
      [0, CHUNK],
      [CHUNK, CHUNK],
      [2 * CHUNK, CHUNK],
      [3 * CHUNK, 1234],
    ]);
    expect(e("/etc/empty")).toMatchObject({ type: "file", size: 0, chunks: [] });
    // Deduplication: equal files share chunks, and so do equal chunks within a file.
    expect(e("/data/dup-b").chunks).toEqual(e("/data/dup-a").chunks);
    const rep = e("/data/repeat").chunks!;
    expect(rep[0]!.storedOffset).toBe(rep[1]!.storedOffset);
    expect(rep[0]!.digest).toBe(rep[1]!.digest);
    expect(e("/usr/bin/ls2")).toMatchObject({ type: "file", nlink: 3, mode: "0o755" });
    expect(e("/usr/bin/ls2").chunks).toEqual(e("/usr/bin/busybox").chunks);
    expect(e("/usr/bin/ls2").chunks![0]!.blob).toBe(0);
    expect(e("/lib/b-link.bin")).toMatchObject({ nlink: 1, size: 15 });
    expect(e("/etc/hostname").chunks![0]!.blob).toBe(2);
    expect(e("/usr/bin/sh")).toMatchObject({ type: "symlink", target: "busybox", size: 7 });
    expect(e("/dev/loop0")).toMatchObject({ type: "block", devMajor: 7, devMinor: 0, gid: 6, mode: "0o660" });
    expect(e("/run/initctl")).toMatchObject({ type: "fifo", mode: "0o600" });
    expect(e("/srv/big-ids")).toMatchObject({ uid: 200_000, gid: 300_000 });
    expect(e("/xattr/file")).toMatchObject({ mtime: T0, xattrs: { "user.mime": Buffer.from("text/plain").toString("base64"), "user.bin": "AAH/" } });
    // The oracle has the same xattrs on disk.
    const onDisk = sh("python3", ["-c", "import os,sys; print(sorted((k, os.getxattr(sys.argv[1], k).hex()) for k in os.listxattr(sys.argv[1])))", join(oracle, "xattr/file")]);
    expect(onDisk.trim()).toBe("[('user.bin', '0001ff'), ('user.mime', '746578742f706c61696e')]");
    if (hasSetfattr) {
      const extracted = sh("python3", ["-c", "import os,sys; print(sorted((k, os.getxattr(sys.argv[1], k).hex()) for k in os.listxattr(sys.argv[1])))", join(dest, "xattr/file")]);
      expect(extracted).toBe(onDisk);
    }
  });

  it("shows one entry or subtree with --path, and an ls -l listing by default", () => {
    const sub = inspectJson(out, "--path", "/usr/bin");
    expect(sub.entries.map((x) => x.path)).toEqual(["/usr/bin", "/usr/bin/busybox", "/usr/bin/ls", "/usr/bin/ls2", "/usr/bin/sh", "/usr/bin/su", "/usr/bin/wall"]);
    const text = skiff("inspect", out);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^kind\s+image bootstrap, format version 1$/m);
    expect(text.stdout).toMatch(/^chunk size\s+64\.0 KiB$/m);
    expect(text.stdout).toMatch(/^inodes\s+\d+: \d+ directories, \d+ files, 4 symlinks, 2 devices, 1 fifos$/m);
    for (const l of layerBlobs) expect(text.stdout).toContain(l.digest);
    expect(text.stdout).toMatch(/^-rwsr-xr-x +1 0 +0 +3 2023-11-14 22:13 \/usr\/bin\/su$/m);
    expect(text.stdout).toMatch(/^-rwxr-sr-x .* \/usr\/bin\/wall$/m);
    expect(text.stdout).toMatch(/^drwxrwxrwt .* \/tmp$/m);
    expect(text.stdout).toMatch(/^crw-rw-rw- +1 0 +0 +1, 3 .* \/dev\/null$/m);
    expect(text.stdout).toMatch(/^lrwxrwxrwx .* \/etc\/abs -> \/usr\/bin\/busybox$/m);
    expect(text.stdout).toMatch(/^-rwxr-xr-x +3 .* \/usr\/bin\/busybox$/m);
    const one = skiff("inspect", out, "--path", "etc/hostname");
    expect(one.stdout.trim().split("\n").at(-1)).toMatch(/^-rw------- +1 0 +0 +8 .* \/etc\/hostname$/);
    const missing = skiff("inspect", out, "--path", "/nope");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('skiff inspect: no entry "/nope" in the image\n');
  });

  it("extracts the same tree from a deflate-raw conversion, with compressed chunks", () => {
    const out2 = join(work, "out-deflate");
    const c = skiff("convert", `${layoutDir}:test`, "--out", out2, "--chunk-size", "64k", "--codec", "deflate-raw");
    expect(c.code, c.stderr).toBe(0);
    const j = inspectJson(out2);
    expect(j.codec).toBe("deflate-raw");
    const chunks = j.entries.flatMap((e) => e.chunks ?? []);
    expect(chunks.some((c) => c.compressed && c.storedSize < c.size)).toBe(true); // text compresses
    expect(chunks.some((c) => !c.compressed)).toBe(true); // random bytes stay raw
    const dest2 = join(work, "dest-deflate");
    const x = skiff("extract", out2, dest2);
    expect(x.code, x.stderr).toBe(0);
    expect(compareTrees(oracleTree, snapshot(dest2))).toEqual([]);
  });

  it("converts deterministically: a second conversion writes byte-identical bootstraps and data blobs", () => {
    const out3 = join(work, "out-again");
    expect(skiff("convert", `${layoutDir}:test`, "--out", out3, "--chunk-size", "64k").code).toBe(0);
    const files = (root: string) => sh("find", [root, "-type", "f", "-path", "*/converted/*"]).trim().split("\n").map((p) => p.slice(root.length)).sort();
    const a = files(out);
    expect(a.length).toBe(3 * 2 + 1); // per layer: data + bootstrap; the image bootstrap
    expect(files(out3)).toEqual(a);
    for (const f of a) expect(readFileSync(join(out3, f)).equals(readFileSync(join(out, f))), f).toBe(true);
    expect(readFileSync(join(out3, "image.json"), "utf8")).toBe(readFileSync(join(out, "image.json"), "utf8"));
    // And again into the same directory: the stored conversions are reused, nothing changes.
    const again = skiff("convert", `${layoutDir}:test`, "--out", out3, "--chunk-size", "64k");
    expect(again.stdout).toMatch(/layers\s+3 \(0 converted, 3 already in/);
  });

  it("refuses a layer whose bytes do not match its digest, and publishes no bootstrap for it", () => {
    const bad = join(work, "layout-bad");
    cpSync(layoutDir, bad, { recursive: true });
    const victim = layerBlobs[1]!; // the uncompressed tar: change a content byte, the tar stays valid
    const path = join(bad, "blobs", "sha256", victim.digest.slice(7));
    const bytes = readFileSync(path);
    const at = bytes.indexOf("new cache entry");
    expect(at).toBeGreaterThan(0);
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.from("N"), 0, 1, at);
    closeSync(fd);
    const outBad = join(work, "out-bad");
    const r = skiff("convert", `${bad}:test`, "--out", outBad, "--chunk-size", "64k");
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`skiff convert: layer bytes do not match digest ${victim.digest}\n`);
    const hex = victim.digest.slice(7);
    const stored = sh("find", [outBad, "-type", "f"]).trim().split("\n");
    expect(stored.filter((p) => p.includes(hex))).toEqual([]);
    expect(stored.filter((p) => p.includes("converted/images"))).toEqual([]);
    expect(existsSync(join(outBad, "image.json"))).toBe(false);
  });

  it("stops extracting at a corrupted chunk, naming the file and the chunk", () => {
    const out4 = join(work, "out-corrupt");
    cpSync(out, out4, { recursive: true });
    const j = inspectJson(out4);
    const victim = j.entries.find((e) => e.path === "/data/multi")!;
    const chunk = victim.chunks![2]!;
    const image = JSON.parse(readFileSync(join(out4, "image.json"), "utf8")) as { layers: { data: string }[] };
    const blobPath = join(out4, image.layers[chunk.blob]!.data);
    const fd = openSync(blobPath, "r+");
    const one = Buffer.alloc(1);
    readSync(fd, one, 0, 1, chunk.storedOffset + 10);
    writeSync(fd, Buffer.from([one[0]! ^ 0xff]), 0, 1, chunk.storedOffset + 10);
    closeSync(fd);
    const r = skiff("extract", out4, join(work, "dest-corrupt"));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^skiff extract: \/data\/multi: chunk 2 does not match its digest sha256:[0-9a-f]{64}\n$/);
  });

  it("refuses a non-empty destination and a directory that convert did not write", () => {
    const full = join(work, "not-empty");
    mkdirSync(full);
    writeFileSync(join(full, "x"), "x");
    const r = skiff("extract", out, full);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`skiff extract: ${full} is not empty; extract needs an empty or missing directory\n`);
    const r2 = skiff("extract", layoutDir, join(work, "nowhere"));
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/^skiff extract: .* has no image\.json: not a directory written by 'skiff convert'\n$/);
    const r3 = skiff("extract", out);
    expect(r3.code).toBe(2);
    expect(r3.stderr).toBe("skiff extract: expected DIR and DEST (see --help)\n");
  });

  it("answers --help for convert, inspect and extract with exit status 0", () => {
    for (const cmd of ["convert", "inspect", "extract"]) {
      const r = skiff(cmd, "--help");
      expect(r.code, cmd).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^Usage: skiff ${cmd} `));
    }
  });
});
