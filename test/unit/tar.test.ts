import { execFileSync, spawnSync } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { closeSync, linkSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, chmodSync, writeFileSync, writeSync, ftruncateSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TarError, TarParser, type TarEntry, type TarParserOptions, type TarSink } from "../../src/convert/tar.ts";

// ---------------------------------------------------------------------------------------------
// Helpers: feeding bytes, collecting entries, building headers by hand.

const CHUNK_SIZES = [1, 7, 511, 512, 513, Infinity];

/** A pull stream delivering `bytes` in copies of `size` bytes; `stats` records what was pulled. */
function streamOf(bytes: Uint8Array, size = Infinity, stats = { pulled: 0, cancelled: false }): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        if (at >= bytes.byteLength) return controller.close();
        const end = Math.min(bytes.byteLength, at + size);
        controller.enqueue(bytes.slice(at, end));
        stats.pulled = end;
        at = end;
      },
      cancel() {
        stats.cancelled = true;
      },
    },
    { highWaterMark: 0 },
  );
}

type Collected = TarEntry & { body: Buffer };

/** Parses the source's pieces as they come, as the cutter does; its errors cancel the source. */
async function parse(source: ReadableStream<Uint8Array>, sink: TarSink, options?: TarParserOptions): Promise<TarParser> {
  const parser = new TarParser(sink, options);
  const reader = source.getReader();
  try {
    for (let r = await reader.read(); !r.done; r = await reader.read()) if (!parser.finished) await parser.push(r.value);
    parser.end();
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  }
  return parser;
}

async function collect(source: ReadableStream<Uint8Array>, options?: TarParserOptions): Promise<Collected[]> {
  const out: Collected[] = [];
  let parts: Uint8Array[] = [];
  const finish = () => {
    if (out.length > 0) out[out.length - 1]!.body = Buffer.concat(parts);
    parts = [];
  };
  const sink: TarSink = {
    entry: (entry) => void (finish(), out.push({ ...entry, body: Buffer.alloc(0) })),
    body: (bytes) => void parts.push(bytes.slice()),
  };
  await parse(source, sink, options);
  finish();
  return out;
}

/** Reads `bytes` in every awkward chunking and checks they all agree. */
async function readEveryWay(bytes: Uint8Array, options?: TarParserOptions): Promise<Collected[]> {
  const reference = await collect(streamOf(bytes), options);
  for (const size of CHUNK_SIZES) expect(await collect(streamOf(bytes, size), options), `chunk size ${size}`).toEqual(reference);
  return reference;
}

async function expectTarError(work: Promise<unknown>, pattern: RegExp): Promise<TarError> {
  const err = await work.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TarError);
  const message = (err as Error).message;
  expect(message).toMatch(pattern);
  expect(message).not.toContain("\n");
  return err as TarError;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

const END = new Uint8Array(1024);
const enc = new TextEncoder();

function octal(value: number, length: number): Uint8Array {
  return enc.encode(value.toString(8).padStart(length - 1, "0") + "\0");
}

function base256(value: bigint, length: number, negative = false): Uint8Array {
  const out = new Uint8Array(length);
  let v = negative ? (1n << BigInt(length * 8)) - value : value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  out[0] = negative ? out[0]! | 0xc0 : (out[0]! & 0x7f) | 0x80;
  return out;
}

interface HeaderSpec {
  name?: string | Uint8Array;
  mode?: number | Uint8Array;
  uid?: number | Uint8Array;
  gid?: number | Uint8Array;
  size?: number | Uint8Array;
  mtime?: number | Uint8Array;
  type?: string;
  linkName?: string | Uint8Array;
  format?: "ustar" | "gnu" | "v7";
  uname?: string | Uint8Array;
  gname?: string | Uint8Array;
  devMajor?: number;
  devMinor?: number;
  prefix?: string;
  checksum?: "unsigned" | "signed" | "bad";
}

function header(spec: HeaderSpec): Uint8Array {
  const b = new Uint8Array(512);
  const put = (value: string | Uint8Array | undefined, at: number) => value !== undefined && b.set(typeof value === "string" ? enc.encode(value) : value, at);
  const num = (value: number | Uint8Array, at: number, length: number) => b.set(typeof value === "number" ? octal(value, length) : value, at);
  put(spec.name ?? "file", 0);
  num(spec.mode ?? 0o644, 100, 8);
  num(spec.uid ?? 0, 108, 8);
  num(spec.gid ?? 0, 116, 8);
  num(spec.size ?? 0, 124, 12);
  num(spec.mtime ?? 1_700_000_000, 136, 12);
  put(spec.type ?? "0", 156);
  put(spec.linkName, 157);
  const format = spec.format ?? "ustar";
  if (format === "ustar") put("ustar\x0000", 257);
  if (format === "gnu") put("ustar  \x00", 257);
  if (format !== "v7") {
    put(spec.uname ?? "root", 265);
    put(spec.gname ?? "root", 297);
    num(spec.devMajor ?? 0, 329, 8);
    num(spec.devMinor ?? 0, 337, 8);
    put(spec.prefix, 345);
  }
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of b) sum += spec.checksum === "signed" && byte >= 0x80 ? byte - 256 : byte;
  if (spec.checksum === "bad") sum += 1;
  b.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return b;
}

function pad(data: Uint8Array): Uint8Array {
  return concat(data, new Uint8Array((512 - (data.byteLength % 512)) % 512));
}

/** A header plus its body; the header's size defaults to the body length. */
function entry(spec: HeaderSpec, body: Uint8Array | string = new Uint8Array(0)): Uint8Array {
  const data = typeof body === "string" ? enc.encode(body) : body;
  return concat(header({ size: data.byteLength, ...spec }), pad(data));
}

function paxRecord(key: string, value: string | Uint8Array): Uint8Array {
  const rest = concat(enc.encode(` ${key}=`), typeof value === "string" ? enc.encode(value) : value, enc.encode("\n"));
  let length = rest.byteLength + 1;
  while (String(length).length + rest.byteLength !== length) length = String(length).length + rest.byteLength;
  return concat(enc.encode(String(length)), rest);
}

function pax(records: Array<[string, string | Uint8Array]>, type = "x"): Uint8Array {
  return entry({ name: "PaxHeader", type }, concat(...records.map(([k, v]) => paxRecord(k, v))));
}

function names(entries: Collected[]): string[] {
  return entries.map((e) => e.path);
}

// ---------------------------------------------------------------------------------------------
// Archives made by GNU tar.

let work: string;
function tmp(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function gnuTar(args: string[]): Uint8Array {
  return new Uint8Array(execFileSync("tar", args, { maxBuffer: 256 * 1024 * 1024 }));
}

function randomBytes(n: number): Buffer {
  const b = Buffer.alloc(n);
  randomFillSync(b);
  return b;
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "skiff-tar-"));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe("archives written by GNU tar", () => {
  const files = {
    small: Buffer.from("hello\n"),
    empty: Buffer.alloc(0),
    exact512: randomBytes(512),
    just513: randomBytes(513),
    big: randomBytes(70_001),
  };
  let tree: string;

  beforeAll(() => {
    tree = tmp("tree");
    mkdirSync(join(tree, "dir"));
    for (const [name, data] of Object.entries(files)) writeFileSync(join(tree, "dir", name), data);
    symlinkSync("dir/small", join(tree, "link"));
    linkSync(join(tree, "dir/small"), join(tree, "hard"));
    chmodSync(join(tree, "dir/small"), 0o4755);
    mkdirSync(join(tree, "sgid"));
    chmodSync(join(tree, "sgid"), 0o2775);
    mkdirSync(join(tree, "sticky"));
    chmodSync(join(tree, "sticky"), 0o1777);
    execFileSync("mkfifo", [join(tree, "fifo")]);
    execFileSync("mknod", [join(tree, "chardev"), "c", "4", "64"]);
    execFileSync("mknod", [join(tree, "blockdev"), "b", "7", "300"]);
  });

  const common = ["--sort=name", "--mtime=@1700000000", "--owner=alice:1234", "--group=staff:567", "-cf", "-"];

  for (const format of ["gnu", "pax", "ustar", "v7"] as const) {
    it(`reads a --format=${format} archive of files, dirs, links, devices and special modes`, async () => {
      // v7 has no devices or fifos: tar skips them with a warning.
      const result = spawnSync("tar", [`--format=${format}`, ...common, "-C", tree, "."], { maxBuffer: 64 << 20 });
      const bytes = new Uint8Array(result.stdout);
      const entries = await readEveryWay(bytes);
      const byPath = new Map(entries.map((e) => [e.path, e]));
      const expected = ["./", "./dir/", ...Object.keys(files).sort().map((f) => `./dir/${f}`), "./hard", "./link", "./sgid/", "./sticky/"];
      const specials = format === "v7" ? [] : ["./blockdev", "./chardev", "./fifo"];
      expect(names(entries).sort()).toEqual([...expected, ...specials].sort());

      for (const [name, data] of Object.entries(files)) {
        const e = byPath.get(`./dir/${name}`)!;
        expect(e.type).toBe("file");
        expect(e.size).toBe(data.byteLength);
        expect(e.body.equals(data)).toBe(true);
      }
      const small = byPath.get("./dir/small")!;
      expect(small).toMatchObject({ mode: 0o4755, uid: 1234, gid: 567, mtime: 1_700_000_000, mtimeNsec: 0, linkName: "" });
      expect(small.uname).toBe(format === "v7" ? "" : "alice");
      expect(small.gname).toBe(format === "v7" ? "" : "staff");
      expect(byPath.get("./link")).toMatchObject({ type: "symlink", linkName: "dir/small", size: 0 });
      expect(byPath.get("./hard")).toMatchObject({ type: "hardlink", linkName: "./dir/small", size: 0 });
      expect(byPath.get("./hard")!.body.byteLength).toBe(0);
      expect(byPath.get("./sgid/")).toMatchObject({ type: "dir", mode: 0o2775 });
      expect(byPath.get("./sticky/")).toMatchObject({ type: "dir", mode: 0o1777 });
      if (format !== "v7") {
        expect(byPath.get("./chardev")).toMatchObject({ type: "char", devMajor: 4, devMinor: 64, size: 0 });
        expect(byPath.get("./blockdev")).toMatchObject({ type: "block", devMajor: 7, devMinor: 300 });
        expect(byPath.get("./fifo")).toMatchObject({ type: "fifo", devMajor: 0, devMinor: 0 });
      }
    });
  }

  it("resolves long names and long link targets (GNU L/K, PAX path/linkpath, ustar prefix)", async () => {
    const dir = tmp("long");
    const mid = `${"m".repeat(60)}/${"n".repeat(60)}/${"o".repeat(60)}`; // 182 chars: needs the ustar prefix
    const deep = `${"a".repeat(90)}/${"b".repeat(90)}/${"c".repeat(90)}/${"d".repeat(50)}`; // > 255 chars
    mkdirSync(join(dir, mid), { recursive: true });
    mkdirSync(join(dir, deep), { recursive: true });
    writeFileSync(join(dir, mid, "f.txt"), "mid");
    writeFileSync(join(dir, deep, "é-file.txt"), "deep");
    const target = `${"t".repeat(150)}/target`;
    symlinkSync(target, join(dir, "longlink"));

    for (const format of ["gnu", "pax"]) {
      const entries = await readEveryWay(gnuTar([`--format=${format}`, "--sort=name", "-cf", "-", "-C", dir, "."]));
      const byPath = new Map(entries.map((e) => [e.path, e]));
      expect(byPath.get(`./${deep}/é-file.txt`)?.body.toString()).toBe("deep");
      expect(byPath.get(`./${mid}/f.txt`)?.body.toString()).toBe("mid");
      expect(byPath.get("./longlink")).toMatchObject({ type: "symlink", linkName: target });
    }
    const ustar = await readEveryWay(gnuTar(["--format=ustar", "-cf", "-", "-C", dir, `./${mid}/f.txt`]));
    expect(names(ustar)).toEqual([`./${mid}/f.txt`]);
  });

  it("takes uid beyond the octal range from GNU base-256 fields", async () => {
    const dir = tmp("bigid");
    writeFileSync(join(dir, "f"), "x");
    const bytes = gnuTar(["--format=gnu", "--owner=big:3000000000", "--group=g:2097152", "-cf", "-", "-C", dir, "f"]);
    expect(bytes[108]! & 0x80).toBe(0x80); // really base-256
    const [e] = await readEveryWay(bytes);
    expect(e).toMatchObject({ uid: 3_000_000_000, gid: 2_097_152, uname: "big", gname: "g" });
  });

  it("keeps the sub-second mtime GNU tar records in PAX archives", async () => {
    const dir = tmp("mtime");
    writeFileSync(join(dir, "f"), "x");
    execFileSync("touch", ["-d", "2023-01-02 03:04:05.123456789Z", join(dir, "f")]);
    const [e] = await readEveryWay(gnuTar(["--format=pax", "-cf", "-", "-C", dir, "f"]));
    expect(e).toMatchObject({ path: "f", mtime: Date.UTC(2023, 0, 2, 3, 4, 5) / 1000, mtimeNsec: 123_456_789 });
  });

  const python = spawnSync("python3", ["-c", "import os; os.setxattr"]).status === 0;
  it.skipIf(!python)("reads extended attributes written by tar --xattrs", async () => {
    const dir = tmp("xattr");
    writeFileSync(join(dir, "f"), "x");
    execFileSync("python3", ["-c", `import os; os.setxattr(${JSON.stringify(join(dir, "f"))}, "user.skiff", b"v\\x00\\xff\\n=1")`]);
    const [e] = await readEveryWay(gnuTar(["--format=pax", "--xattrs", "--xattrs-include=user.*", "-cf", "-", "-C", dir, "f"]));
    expect(e!.xattrs).toEqual(new Map([["user.skiff", new Uint8Array([0x76, 0, 0xff, 0x0a, 0x3d, 0x31])]]));
  });

  it("rejects sparse files in GNU and PAX (0.0 and 1.0) encodings", async () => {
    const dir = tmp("sparse");
    const fd = openSync(join(dir, "holes"), "w");
    writeSync(fd, "data in the middle", 5 * 1024 * 1024);
    ftruncateSync(fd, 10 * 1024 * 1024);
    closeSync(fd);
    for (const args of [["--format=gnu"], ["--format=pax"], ["--format=pax", "--sparse-version=1.0"]]) {
      const bytes = gnuTar([...args, "--sparse", "-cf", "-", "-C", dir, "holes"]);
      expect(bytes.byteLength).toBeLessThan(100_000); // the holes were really left out
      await expectTarError(collect(streamOf(bytes, 513)), /sparse files are not supported: "holes"/);
    }
  });

  it("rejects GNU dumpdir entries from incremental archives, and volume labels, naming the type", async () => {
    const dir = tmp("incremental");
    writeFileSync(join(dir, "f"), "x");
    const incremental = gnuTar(["--format=gnu", `--listed-incremental=${join(work, "snar")}`, "-cf", "-", "-C", dir, "."]);
    await expectTarError(collect(streamOf(incremental)), /dumpdir.*'D'/);
    const labelled = gnuTar(["--format=gnu", "--label=VOLUME", "-cf", "-", "-C", dir, "f"]);
    await expectTarError(collect(streamOf(labelled)), /unsupported entry type 'V'.*entry 0 "VOLUME".*offset 0/);
  });

  it("rejects a name that is not valid UTF-8", async () => {
    const dir = tmp("latin1");
    writeFileSync(Buffer.from(`${join(dir, "caf")}\xe9`, "latin1"), "x");
    for (const format of ["gnu", "pax"]) {
      const bytes = gnuTar([`--format=${format}`, "-cf", "-", "-C", dir, "."]);
      await expectTarError(collect(streamOf(bytes)), /name is not valid UTF-8/);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-assembled archives for the edge cases.

describe("hand-built headers", () => {
  it("reads base-256 size, uid, gid and mtime; negative only for mtime (before 1970)", async () => {
    const body = randomBytes(1000);
    const archive = concat(
      entry({ name: "b256", size: base256(1000n, 12), uid: base256(5_000_000_000n, 8), gid: base256(7n, 8), mtime: base256(1_700_000_001n, 12) }, body),
      END,
    );
    const [e] = await readEveryWay(archive);
    expect(e).toMatchObject({ size: 1000, uid: 5_000_000_000, gid: 7, mtime: 1_700_000_001 });
    expect(e!.body.equals(body)).toBe(true);
    const [old] = await readEveryWay(concat(entry({ name: "old", mtime: base256(86_400n, 12, true) }), END));
    expect(old).toMatchObject({ mtime: -86_400, mtimeNsec: 0 });
    await expectTarError(collect(streamOf(concat(entry({ name: "neg", uid: base256(5n, 8, true) }), END))), /negative base-256 uid.*"neg"/);
  });

  it("accepts octal fields padded with spaces and NULs, and rejects junk in them", async () => {
    const archive = concat(
      entry({ name: "sp", mode: enc.encode(" 755 \0\0"), uid: enc.encode("   12\0  "), size: enc.encode("5\0\0\0\0\0\0\0\0\0\0\0") }, "12345"),
      entry({ name: "empty-fields", mode: new Uint8Array(8), uid: new Uint8Array(8), mtime: enc.encode("           ") }),
      END,
    );
    const [a, b] = await readEveryWay(archive);
    expect(a).toMatchObject({ mode: 0o755, uid: 0o12, size: 5 });
    expect(a!.body.toString()).toBe("12345");
    expect(b).toMatchObject({ mode: 0, uid: 0, mtime: 0 });
    await expectTarError(collect(streamOf(concat(entry({ name: "junk", uid: enc.encode("12x4\0") }), END))), /invalid octal uid/);
    await expectTarError(collect(streamOf(concat(entry({ name: "digit8", mode: enc.encode("0000789\0") }), END))), /invalid octal mode/);
  });

  it("verifies header checksums, accepting signed sums and naming the offset of a bad one", async () => {
    const signed = concat(entry({ name: "sïgned-é", uname: "ü", checksum: "signed" }, "ok"), END);
    expect((await readEveryWay(signed))[0]).toMatchObject({ path: "sïgned-é", uname: "ü" });
    const bad = concat(entry({ name: "first" }, "x"), entry({ name: "second", checksum: "bad" }), END);
    await expectTarError(collect(streamOf(bad, 7)), /bad header checksum.*entry 1.*offset 1024\)/);
  });

  it("lets a PAX size override the header size (files over 8 GiB)", async () => {
    const body = randomBytes(1000);
    const archive = concat(pax([["size", "1000"]]), header({ name: "huge", size: 0 }), pad(body), entry({ name: "after" }, "z"), END);
    const [e, after] = await readEveryWay(archive);
    expect(e).toMatchObject({ path: "huge", size: 1000 });
    expect(e!.body.equals(body)).toBe(true);
    expect(after).toMatchObject({ path: "after", size: 1 });
  });

  it("reads negative PAX mtimes (before 1970) and refuses negative PAX ids", async () => {
    const archive = concat(pax([["mtime", "-1.25"]]), entry({ name: "old" }, "x"), pax([["mtime", "-86400"]]), entry({ name: "older" }, "y"), END);
    const [old, older] = await readEveryWay(archive);
    expect(old).toMatchObject({ mtime: -2, mtimeNsec: 750_000_000 });
    expect(older).toMatchObject({ mtime: -86_400, mtimeNsec: 0 });
    await expectTarError(collect(streamOf(concat(pax([["uid", "-1"]]), entry({ name: "u" }), END))), /invalid PAX uid/);
  });

  it("applies PAX path, linkpath, mtime fraction, uid/gid and owner names to the next entry only", async () => {
    const archive = concat(
      pax([
        ["path", "real/päth"],
        ["linkpath", "target/ü"],
        ["mtime", "1700000000.5"],
        ["uid", "70000"],
        ["gid", "80000"],
        ["uname", "ünicode"],
        ["gname", "grp"],
        ["atime", "1.1"],
        ["comment", "ignored"],
        ["LIBARCHIVE.xattr.user.x", "eHh4"],
      ]),
      entry({ name: "short", type: "2" }),
      entry({ name: "plain" }),
      END,
    );
    const [a, b] = await readEveryWay(archive);
    expect(a).toMatchObject({ path: "real/päth", type: "symlink", linkName: "target/ü", mtime: 1_700_000_000, mtimeNsec: 500_000_000, uid: 70000, gid: 80000, uname: "ünicode", gname: "grp" });
    expect(a!.xattrs.size).toBe(0);
    expect(b).toMatchObject({ path: "plain", mtime: 1_700_000_000, mtimeNsec: 0, uid: 0, uname: "root" });
  });

  it("keeps raw xattr bytes from SCHILY.xattr records, including NUL, newline and '='", async () => {
    const value = new Uint8Array([0, 1, 0x0a, 0x3d, 0xff, 0xfe]);
    const archive = concat(
      pax([
        ["SCHILY.xattr.security.capability", value],
        ["SCHILY.xattr.user.empty", ""],
        ["SCHILY.xattr.user.é", "v"],
      ]),
      entry({ name: "f" }, "x"),
      entry({ name: "g" }),
      END,
    );
    const [f, g] = await readEveryWay(archive);
    expect(f!.xattrs).toEqual(
      new Map([
        ["security.capability", value],
        ["user.empty", new Uint8Array(0)],
        ["user.é", enc.encode("v")],
      ]),
    );
    expect(g!.xattrs.size).toBe(0);
  });

  it("applies PAX global headers to later entries until overridden or deleted", async () => {
    const archive = concat(
      pax([["uid", "42"], ["uname", "global"], ["SCHILY.xattr.user.g", "1"]], "g"),
      entry({ name: "a", uid: 1 }),
      pax([["uid", ""], ["uname", "local"]]), // empty local value: back to the header field
      entry({ name: "b", uid: 2 }),
      entry({ name: "c", uid: 3 }),
      pax([["uid", ""], ["SCHILY.xattr.user.g", ""]], "g"), // empty global values: those global records are gone
      entry({ name: "d", uid: 4 }),
      END,
    );
    const entries = await readEveryWay(archive);
    const xattr = (e: Collected) => (e.xattrs.has("user.g") ? Buffer.from(e.xattrs.get("user.g")!).toString() : "none");
    expect(entries.map((e) => [e.path, e.uid, e.uname, xattr(e)])).toEqual([
      ["a", 42, "global", "1"],
      ["b", 2, "local", "1"],
      ["c", 42, "global", "1"],
      ["d", 4, "global", "none"],
    ]);
  });

  it("decodes the header name only when no long name replaces it", async () => {
    // Writers truncate the header name when a PAX/GNU long name holds the real one, sometimes inside a UTF-8 sequence.
    const truncated = concat(enc.encode("a".repeat(99)), new Uint8Array([0xc3]));
    const archive = concat(
      pax([["path", `${"a".repeat(99)}é`]]),
      entry({ name: truncated }),
      entry({ name: "././@LongLink", type: "L", format: "gnu" }, `${"b".repeat(99)}é\0`),
      entry({ name: truncated, format: "gnu" }),
      END,
    );
    expect(names(await readEveryWay(archive))).toEqual([`${"a".repeat(99)}é`, `${"b".repeat(99)}é`]);
    await expectTarError(collect(streamOf(concat(entry({ name: truncated }), END))), /name is not valid UTF-8.*entry 0.*offset 0/);
    await expectTarError(collect(streamOf(concat(pax([["path", new Uint8Array([0x66, 0xff])]]), entry({ name: "ok" }), END))), /name is not valid UTF-8 \(PAX path\): "f\uFFFD"/);
    await expectTarError(collect(streamOf(concat(entry({ name: "l", type: "2", linkName: new Uint8Array([0xe9]) }), END))), /link name is not valid UTF-8 \(header\)/);
  });

  it("joins the ustar prefix and name, and ignores the prefix area of GNU headers", async () => {
    const archive = concat(
      entry({ name: "leaf.txt", prefix: "some/deep/dir" }, "p"),
      entry({ name: "gnu-file", format: "gnu", prefix: "\x31\x32" }), // GNU keeps atime there
      END,
    );
    expect(names(await readEveryWay(archive))).toEqual(["some/deep/dir/leaf.txt", "gnu-file"]);
  });

  it("maps type flags: '\\0' and '7' are files, old-style slash-named files are directories", async () => {
    const archive = concat(
      entry({ name: "nul-type", type: "\0", format: "v7" }, "n"),
      entry({ name: "contig", type: "7" }, "c"),
      entry({ name: "olddir/", type: "\0", format: "v7", mode: 0o755 }),
      entry({ name: "olddir2/", type: "0" }),
      entry({ name: "after" }, "a"),
      END,
    );
    const entries = await readEveryWay(archive);
    expect(entries.map((e) => [e.path, e.type, e.body.toString()])).toEqual([
      ["nul-type", "file", "n"],
      ["contig", "file", "c"],
      ["olddir/", "dir", ""],
      ["olddir2/", "dir", ""],
      ["after", "file", "a"],
    ]);
    expect(entries[2]).toMatchObject({ mode: 0o755, size: 0, uname: "" });
  });

  it("treats links, devices, fifos and directories as header-only whatever their size field says", async () => {
    const archive = concat(
      header({ name: "sym", type: "2", linkName: "t", size: 700 }),
      header({ name: "dir/", type: "5", size: 5 }),
      header({ name: "dev", type: "3", size: 1, devMajor: 1, devMinor: 5 }),
      entry({ name: "file" }, "data"),
      END,
    );
    const entries = await readEveryWay(archive);
    expect(entries.map((e) => [e.path, e.type, e.size])).toEqual([
      ["sym", "symlink", 0],
      ["dir/", "dir", 0],
      ["dev", "char", 0],
      ["file", "file", 4],
    ]);
  });

  it("rejects unknown type flags by name", async () => {
    await expectTarError(collect(streamOf(concat(entry({ name: "e0" }), entry({ name: "m", type: "M" }), END))), /unsupported entry type 'M'.*entry 1 "m".*offset 512\)/);
    await expectTarError(collect(streamOf(concat(entry({ name: "bin", type: "\x01" }), END))), /unsupported entry type 0x01/);
    await expectTarError(collect(streamOf(concat(entry({ name: "s", type: "S", format: "gnu" }), END))), /sparse files are not supported: "s"/);
  });

  it("validates PAX record syntax", async () => {
    const bad = async (records: string) => collect(streamOf(concat(entry({ name: "p", type: "x" }, records), entry({ name: "f" }), END)));
    await expectTarError(bad("30 path=x\n"), /length 30 does not fit/);
    await expectTarError(bad("8 path=x\n"), /does not end at a newline/);
    await expectTarError(bad("10 path=xy\n"), /does not end at a newline/);
    await expectTarError(bad("8 pathx\n"), /no keyword/);
    await expectTarError(bad("x path=y\n"), /bad length/);
    await expectTarError(bad("0 path=y\n"), /does not fit/);
    await expectTarError(bad("11 size=-1\n"), /invalid PAX size/);
    await expectTarError(bad("11 uid=1.5\n"), /invalid PAX uid/);
    await expectTarError(bad("12 path=a\0b\n"), /PAX path contains a NUL/);
    // Trailing NUL padding after the records is harmless.
    expect(names(await collect(streamOf(concat(entry({ name: "p", type: "x" }, "10 path=y\n\0\0\0"), entry({ name: "f" }), END))))).toEqual(["y"]);
  });

  it("fails fast on a hostile 8 GB PAX header without reading or allocating it", async () => {
    const stats = { pulled: 0, cancelled: false };
    const hostile = header({ name: "evil", type: "x", size: base256(8n << 30n, 12) });
    // An endless source: the reader must stop after the header.
    let sent = 0;
    const source = new ReadableStream<Uint8Array>(
      {
        pull(c) {
          c.enqueue(sent++ === 0 ? hostile : new Uint8Array(65536));
          stats.pulled += 1;
        },
        cancel() {
          stats.cancelled = true;
        },
      },
      { highWaterMark: 0 },
    );
    await expectTarError(collect(source), /PAX extended header of 8589934592 bytes exceeds the limit of 1048576/);
    expect(stats.pulled).toBe(1);
    expect(stats.cancelled).toBe(true);
  });

  it("limits PAX and long-name sizes, configurable by options", async () => {
    const longName = "n".repeat(70_000);
    const archive = concat(entry({ name: "././@LongLink", type: "L", format: "gnu" }, `${longName}\0`), entry({ name: "n", format: "gnu" }, "x"), END);
    await expectTarError(collect(streamOf(archive)), /GNU long name of 70001 bytes exceeds the limit of 65536/);
    expect(names(await collect(streamOf(archive), { maxLongNameBytes: 100_000 }))).toEqual([longName]);
    const longLink = concat(entry({ name: "././@LongLink", type: "K", format: "gnu" }, "t".repeat(300)), entry({ name: "l", type: "2", format: "gnu" }), END);
    await expectTarError(collect(streamOf(longLink), { maxLongNameBytes: 200 }), /GNU long link name of 300 bytes exceeds the limit of 200/);
    const paxed = concat(pax([["comment", "c".repeat(300)]]), entry({ name: "f" }), END);
    await expectTarError(collect(streamOf(paxed), { maxPaxHeaderBytes: 256 }), /PAX extended header of \d+ bytes exceeds the limit of 256/);
    expect(names(await collect(streamOf(paxed)))).toEqual(["f"]);
  });

  it("rejects an extended header that no entry follows", async () => {
    await expectTarError(collect(streamOf(concat(entry({ name: "f" }), pax([["path", "x"]]), END))), /extended header not followed by an entry.*entry 1/);
    await expectTarError(collect(streamOf(concat(entry({ name: "f" }), pax([["path", "x"]])))), /truncated archive: stream ended after an extended header/);
  });
});

// ---------------------------------------------------------------------------------------------
// End of archive, truncation and stream behaviour.

describe("archive ends and streaming", () => {
  const two = concat(entry({ name: "a" }, "A".repeat(600)), entry({ name: "b" }, "bb"));

  it("ends at two zero blocks, one zero block, or a block boundary without zero blocks", async () => {
    for (const tail of [END, new Uint8Array(512), new Uint8Array(0), new Uint8Array(10240)]) {
      const entries = await readEveryWay(concat(two, tail));
      expect(entries.map((e) => [e.path, e.body.byteLength])).toEqual([
        ["a", 600],
        ["b", 2],
      ]);
    }
    expect(await collect(streamOf(new Uint8Array(0)))).toEqual([]);
    expect(await collect(streamOf(END))).toEqual([]);
  });

  it("pauses while the sink waits, and parses on where it stopped", async () => {
    const archive = concat(entry({ name: "a" }, randomBytes(3000)), entry({ name: "dir/", type: "5" }), entry({ name: "b" }, "bb"), END);
    // Not 1-byte pieces: a turn of the event loop for each of 3,000 body bytes is slow to no purpose.
    for (const size of CHUNK_SIZES.slice(1)) {
      const events: string[] = [];
      let waiting = 0;
      // Every call waits a turn: nothing may reach the sink while an earlier call is unsettled.
      const pause = (what: string) => {
        expect(waiting, what).toBe(0);
        events.push(what);
        waiting++;
        return new Promise<void>((resolve) => setTimeout(() => void (waiting--, resolve()), 0));
      };
      const bodies: Uint8Array[] = [];
      await parse(streamOf(archive, size), {
        entry: (e) => pause(`entry ${e.path}`),
        body: (bytes) => {
          const copy = bytes.slice();
          bodies.push(copy);
          return pause(`body ${copy.byteLength}`).then(() => expect(bytes, "the piece is kept while paused").toEqual(copy));
        },
      });
      expect(events.filter((e) => e.startsWith("entry")), `chunk size ${size}`).toEqual(["entry a", "entry dir/", "entry b"]);
      expect(Buffer.concat(bodies).byteLength).toBe(3002);
    }
  });

  it("passes a sink's error through unchanged, thrown or rejected, and stops", async () => {
    const boom = new Error("sink failed");
    for (const how of ["throw", "reject"]) {
      const seen: string[] = [];
      const failing: TarSink = {
        entry: (e) => {
          seen.push(e.path);
          if (e.path !== "b") return undefined;
          if (how === "throw") throw boom;
          return Promise.reject(boom);
        },
        body: () => undefined,
      };
      const stats = { pulled: 0, cancelled: false };
      await expect(parse(streamOf(concat(two, entry({ name: "c" }), END), 512, stats), failing)).rejects.toBe(boom);
      expect(seen).toEqual(["a", "b"]);
      expect(stats.cancelled).toBe(true);
    }
  });

  it("rejects a lone zero block followed by another header", async () => {
    await expectTarError(collect(streamOf(concat(entry({ name: "a" }), new Uint8Array(512), entry({ name: "b" }), END))), /lone zero block.*offset 512\)/);
  });

  it("reports truncation inside a header, a body and its padding", async () => {
    for (const cut of [100, 1535, 1536 + 100, 1536 + 511, 1536 + 512 + 1]) {
      const bytes = two.subarray(0, cut);
      await expectTarError(collect(streamOf(bytes, 7)), /truncated archive/);
    }
    await expectTarError(collect(streamOf(two.subarray(0, 700))), /truncated archive: stream ended inside a file body.*"a", archive offset 700\)/);
    await expectTarError(collect(streamOf(two.subarray(0, 1200))), /truncated archive: stream ended inside an entry's data.*"a", archive offset 1200\)/);
    const dirWithData = concat(header({ name: "old/", size: octal(1000, 12) }), new Uint8Array(600));
    await expectTarError(collect(streamOf(dirWithData)), /truncated archive: stream ended inside an entry's data.*"old\/"/);
  });

  it("hands bodies on as views of the pieces pushed, without copying", async () => {
    const archive = concat(entry({ name: "a" }, randomBytes(3000)), END);
    const pieces: Uint8Array[] = [];
    for (let i = 0; i < archive.byteLength; i += 1000) pieces.push(archive.slice(i, i + 1000));
    const bodies: Uint8Array[] = [];
    const parser = new TarParser({ entry: () => undefined, body: (bytes) => void bodies.push(bytes) });
    for (const piece of pieces) expect(parser.push(piece)).toBeUndefined();
    parser.end();
    expect(bodies.map((p) => p.byteLength)).toEqual([488, 1000, 1000, 512]);
    for (const p of bodies) expect(pieces.some((c) => c.buffer === p.buffer)).toBe(true);
  });

  it("is finished at the end marker and ignores what follows it", async () => {
    const parser = new TarParser({ entry: () => undefined, body: () => undefined });
    parser.push(concat(two, END.subarray(0, 700)));
    expect(parser.finished).toBe(false);
    parser.push(concat(END.subarray(700), new Uint8Array(9216), enc.encode("junk after the end")));
    expect(parser.finished).toBe(true);
    parser.push(enc.encode("more junk"));
    expect(() => parser.end()).not.toThrow();
    const early = new TarParser({ entry: () => undefined, body: () => undefined });
    early.push(two);
    early.push(new Uint8Array(512));
    expect(early.finished).toBe(false);
    expect(() => early.end()).not.toThrow();
  });

  it("streams a 200 MB archive with flat memory, bodies byte-exact", { timeout: 180_000 }, async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const sizes = [64 * 1024 * 1024 + 123, 100 * 1024 * 1024 + 511, 36 * 1024 * 1024 + 1];
    const expected: string[] = [];
    // Generated on the fly: headers, pseudo-random data in odd-sized chunks, padding, end blocks.
    async function* generate(): AsyncGenerator<Uint8Array> {
      for (const [i, size] of sizes.entries()) {
        yield header({ name: `big-${i}`, size: base256(BigInt(size), 12) });
        const hash = createHash("sha256");
        for (let left = size; left > 0; ) {
          const chunk = randomBytes(Math.min(left, 65536 - 7));
          hash.update(chunk);
          left -= chunk.byteLength;
          yield chunk;
        }
        expected.push(hash.digest("hex"));
        yield new Uint8Array((512 - (size % 512)) % 512);
      }
      yield END;
    }
    const it = generate();
    const source = new ReadableStream<Uint8Array>(
      {
        async pull(c) {
          const { done, value } = await it.next();
          if (done) c.close();
          else c.enqueue(value);
        },
      },
      { highWaterMark: 0 },
    );

    const usage = () => {
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const baseline = usage();
    let peak = 0;
    const got: Array<{ size: number; bytes: number; sha: string }> = [];
    let hash = createHash("sha256");
    let current: { size: number; bytes: number; sha: string } | null = null;
    let sinceCheck = 0;
    const done = () => {
      if (current) got.push({ ...current, sha: hash.digest("hex") });
    };
    await parse(source, {
      entry: (e) => {
        done();
        hash = createHash("sha256");
        current = { size: e.size, bytes: 0, sha: "" };
        return undefined;
      },
      body: (piece) => {
        hash.update(piece);
        current!.bytes += piece.byteLength;
        sinceCheck += piece.byteLength;
        if (sinceCheck > 16 * 1024 * 1024) {
          sinceCheck = 0;
          peak = Math.max(peak, usage() - baseline);
        }
        return undefined;
      },
    });
    done();
    expect(got).toEqual(sizes.map((size, i) => ({ size, bytes: size, sha: expected[i] })));
    expect(peak).toBeLessThan(64 * 1024 * 1024);
  });
});
