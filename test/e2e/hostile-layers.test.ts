// Layers written to escape: `..` paths, absolute paths, symlinks followed by entries "inside" them,
// hardlinks to /etc/passwd and above the root, within one layer and across layers; and a hand-made
// hostile bootstrap. convert + extract must never create or change anything outside DEST, and must
// say what it left out.
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { materialize } from "../../src/cli/materialize.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { baseNode, newDir } from "../../src/format/model.ts";
import * as L from "../../src/format/layout.ts";
import { MT, OciLayout } from "./harness/images.ts";
import { diffIdOf, sh, skiff, snapshot, writeImage, type TreeEntry } from "./harness/rootfs.ts";
import { teardown } from "./harness/teardown.ts";
import { tempDir } from "./harness/workdir.ts";

/** A tar archive from [kind, name, data-or-linkname] members, written by Python's tarfile, unfiltered. */
function pyTar(out: string, members: [kind: "file" | "dir" | "symlink" | "hardlink", name: string, arg?: string][]): Buffer {
  const script = `
import io, json, sys, tarfile
members = json.loads(sys.argv[2])
with tarfile.open(sys.argv[1], "w", format=tarfile.GNU_FORMAT) as t:
    for kind, name, arg in members:
        i = tarfile.TarInfo(name)
        i.mtime = 1700000000
        if kind == "file":
            data = (arg or "").encode()
            i.size = len(data)
            t.addfile(i, io.BytesIO(data))
            continue
        i.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
        i.mode = 0o755 if kind == "dir" else 0o777
        i.linkname = arg or ""
        t.addfile(i)
`;
  sh("python3", ["-c", script, out, JSON.stringify(members.map(([k, n, a]) => [k, n, a ?? null]))]);
  return readFileSync(out);
}

const fileHash = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

let work: string;
let outside: string;
let dest: string;
let out: string;
let convert: { code: number | null; stdout: string; stderr: string };
let extract: { code: number | null; stdout: string; stderr: string };
let passwdBefore: { hash: string; nlink: number; mtimeMs: number; ino: number };
let surroundingsBefore: Map<string, TreeEntry>;
let surroundings: string;

/** Everything around DEST (its parents' other contents) and the outside target directory, without DEST. */
function around(): Map<string, TreeEntry> {
  const all = snapshot(surroundings);
  const rel = dest.slice(surroundings.length + 1);
  for (const p of [...all.keys()]) if (p === rel || p.startsWith(`${rel}/`)) all.delete(p);
  return all;
}

beforeAll(() => {
  work = tempDir("hostile");
  // The symlink target outside the work directory, as /tmp/<name> in the brief.
  outside = mkdtempSync(join(tmpdir(), "skiff-outside-"));
  surroundings = join(work, "around");
  dest = join(surroundings, "a", "b", "dest");
  mkdirSync(join(surroundings, "a", "b"), { recursive: true });
  writeFileSync(join(surroundings, "a", "sentinel"), "do not touch\n");
  writeFileSync(join(surroundings, "a", "b", "sentinel"), "do not touch either\n");
  const pst = lstatSync("/etc/passwd");
  passwdBefore = { hash: fileHash("/etc/passwd"), nlink: pst.nlink, mtimeMs: pst.mtimeMs, ino: pst.ino };

  const l1 = pyTar(join(work, "l1.tar"), [
    ["file", "ok", "fine\n"],
    ["file", "../evil", "evil 1"],
    ["file", "/abs/evil", "absolute, so taken from the root"],
    ["file", "a/../../evil", "evil 3"],
    ["symlink", "link", outside],
    ["file", "link/pwned", "through a symlink"],
    ["symlink", "up", ".."],
    ["file", "up/up/evil", "evil 4"],
    ["hardlink", "hl", "/etc/passwd"],
    ["hardlink", "hl2", "../../x"],
    ["symlink", "etcpasswd", "/etc/passwd"],
  ]);
  // The second layer uses the first layer's symlinks as if they were directories.
  const l2 = pyTar(join(work, "l2.tar"), [
    ["file", "link/pwned2", "through a lower layer's symlink"],
    ["file", "up/evil5", "through a lower layer's symlink to .."],
    ["hardlink", "hl3", "etcpasswd"],
    ["file", "./ok/../../evil6", "evil 6"],
  ]);
  const layoutDir = join(work, "layout");
  writeImage(new OciLayout(layoutDir), "hostile", [
    { bytes: gzipSync(l1), mediaType: MT.layerGzip, diffId: diffIdOf(l1) },
    { bytes: l2, mediaType: MT.layerTar, diffId: diffIdOf(l2) },
  ]);
  mkdirSync(dest); // extract accepts an empty DEST; made now so its parent's link count is stable
  surroundingsBefore = around();

  out = join(work, "out");
  convert = skiff("convert", `${layoutDir}:hostile`, "--out", out);
  extract = skiff("extract", out, dest);
}, 60_000);

afterAll(async () => {
  rmSync(outside, { recursive: true, force: true });
  await teardown();
});

describe("hostile layers", () => {
  it("converts, reporting every entry it left out and why", () => {
    expect(convert.code, convert.stderr).toBe(0);
    const skipped = convert.stdout.slice(convert.stdout.indexOf("skipped"));
    expect(convert.stdout).toMatch(/skipped\s+7 entries:/);
    for (const [path, reason] of [
      ["../evil", "leaves the root"],
      ["a/../../evil", "leaves the root"],
      ["./ok/../../evil6", "leaves the root"],
      ["link/pwned", "not a directory"],
      ["up/up/evil", "not a directory"],
      ["hl2", "leaves the root"],
      ["/hl", "/etc/passwd"],
    ]) {
      expect(skipped).toMatch(new RegExp(`^\\s+${path!.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: .*${reason!.replace(/[./]/g, "\\$&")}`, "m"));
    }
  });

  it("extracts only below DEST, taking absolute paths from DEST's root and never following symlinks", () => {
    expect(extract.code, extract.stderr).toBe(0);
    const tree = snapshot(dest);
    expect([...tree.keys()]).toEqual(["", "abs", "abs/evil", "etcpasswd", "hl3", "link", "link/pwned2", "ok", "up", "up/evil5"]);
    // A lower layer's symlink used as a directory is replaced by a real directory (as OverlayFS shows it).
    expect(tree.get("link")!.type).toBe("dir");
    expect(tree.get("up")!.type).toBe("dir");
    // The hardlink to a symlink links the symlink itself: /etc/passwd gains no name.
    expect(tree.get("hl3")).toMatchObject({ type: "symlink", target: "/etc/passwd", nlink: 2 });
    expect(tree.get("etcpasswd")).toMatchObject({ type: "symlink", nlink: 2 });
    expect(readFileSync(join(dest, "abs/evil"), "utf8")).toBe("absolute, so taken from the root");
  });

  it("leaves everything outside DEST as it was: the surroundings, the symlink target, /etc/passwd", () => {
    expect(around()).toEqual(surroundingsBefore);
    expect(readdirSync(outside)).toEqual([]);
    expect(existsSync(join(outside, "pwned"))).toBe(false);
    const pst = lstatSync("/etc/passwd");
    expect({ hash: fileHash("/etc/passwd"), nlink: pst.nlink, mtimeMs: pst.mtimeMs, ino: pst.ino }).toEqual(passwdBefore);
    const evil = sh("find", [work, "-name", "evil*", "-not", "-path", `${dest}/*`]).trim();
    expect(evil).toBe("");
  });

  it("rejects a hand-modified bootstrap before writing anything", () => {
    const image = JSON.parse(readFileSync(join(out, "image.json"), "utf8")) as { bootstrap: string };
    const key = join(out, image.bootstrap);
    const original = readFileSync(key);
    const b = Bootstrap.decode(original);
    const view = new DataView(original.buffer, original.byteOffset, original.byteLength);
    const u32 = (o: number) => view.getUint32(o, true);
    const counts = L.readCounts(view);
    const at = L.sectionOffsets(counts);
    const rootEntries = b.readdir(0);
    const okDirent = at.dirents + (u32(at.inodes + 40) + rootEntries.findIndex((e) => e.name === "ok")) * L.DIRENT_RECORD_SIZE;
    const strings = Buffer.from(original.subarray(at.strings));

    const attempts: [string, (bytes: Buffer) => void, RegExp][] = [
      // The name "ok" becomes "/etc/passwd" (a symlink target in the string table).
      [
        "a name with slashes",
        (bytes) => {
          const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
          v.setUint32(okDirent, strings.indexOf("/etc/passwd"), true);
          v.setUint16(okDirent + 4, 11, true);
        },
        /contains '\/'/,
      ],
      // The name "ok" is overwritten with "..".
      ["a name '..'", (bytes) => void bytes.write("..", at.strings + u32(okDirent), "latin1"), /named \. or \.\./],
      // The entry "ok" points back at the root: a cycle.
      ["a cycle", (bytes) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setUint32(okDirent + 8, 0, true), /points at inode 0/],
      // A chunk claims to lie beyond its data blob.
      ["a chunk outside its blob", (bytes) => new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).setBigUint64(at.chunks + 40, 1n << 40n, true), /outside its blob/],
    ];
    try {
      for (const [what, mutate, message] of attempts) {
        const bytes = Buffer.from(original);
        mutate(bytes);
        writeFileSync(key, bytes);
        const target = join(surroundings, "a", "b", `dest-${what.replace(/\W+/g, "-")}`);
        const r = skiff("extract", out, target);
        expect(r.code, what).toBe(1);
        expect(r.stderr, what).toMatch(/^skiff extract: .*invalid bootstrap: /);
        expect(r.stderr, what).toMatch(message);
        expect(r.stderr.trim().split("\n"), what).toHaveLength(1);
        expect(existsSync(target), what).toBe(false);
      }
    } finally {
      writeFileSync(key, original);
    }
    expect(readdirSync(outside)).toEqual([]);
  });

  it("stops when a directory it created is swapped for a symlink while it extracts", async () => {
    // d/f's chunk read swaps d for a symlink to the outside directory; d/g must not land there.
    const content = Buffer.from("hello");
    const digest = new Uint8Array(createHash("sha256").update(content).digest());
    const d = newDir();
    d.children!.set("f", { ...baseNode("file", 0o644), size: 5, chunks: [0] });
    d.children!.set("g", { ...baseNode("file", 0o644), size: 5, chunks: [0] });
    const root = newDir();
    root.children!.set("d", d);
    const bootstrap = Bootstrap.decode(
      encodeBootstrap({
        kind: "image",
        codec: 0,
        chunkShift: 16,
        platform: "linux/amd64",
        blobs: [{ dataDigest: digest, storedSize: 5, layerDigest: "sha256:x" }],
        chunks: [{ digest, blob: 0, compressed: false, storedOffset: 0, storedSize: 5, size: 5, uncompressedOffset: 0 }],
        root,
      }),
    );
    const target = join(work, "race-dest");
    mkdirSync(target);
    let swapped = false;
    const result = materialize({
      bootstrap,
      dest: target,
      warn: () => {},
      readStored: async () => {
        if (!swapped) {
          swapped = true;
          renameSync(join(target, "d"), join(target, "d-moved"));
          symlinkSync(outside, join(target, "d"));
        }
        return content;
      },
    });
    await expect(result).rejects.toThrow(/refusing to write below .*\/d: it is no longer the directory extract created/);
    expect(readdirSync(outside)).toEqual([]);
    expect(readdirSync(join(target, "d-moved"))).toEqual(["f"]);
  });
});
