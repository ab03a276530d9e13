// The read-only FUSE filesystem against GNU tar: a one-layer image with every node type is converted,
// mounted with a LocalReader in a child process (FUSE callbacks run on the serving process's thread,
// so this process only touches the mount from outside, asynchronously), and every entry of the mount
// must match what `tar -xp` makes of the same layer.
import { execFile, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, chownSync, linkSync, lchownSync, lutimesSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readFile, readlink, statfs, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MT, OciLayout, Prng } from "../../test/e2e/harness/images.ts";
import { spawnService, stopChild, waitFor } from "../../test/e2e/harness/processes.ts";
import { diffIdOf, diffTrees, sh, skiff, snapshot, writeImage, type TreeEntry } from "../../test/e2e/harness/rootfs.ts";
import { teardown } from "../../test/e2e/harness/teardown.ts";
import { mountsUnder, tempDir } from "../../test/e2e/harness/workdir.ts";

const MOUNT_SCRIPT = fileURLToPath(new URL("./mount-image.mjs", import.meta.url));
const CHUNK = 64 * 1024;
const T0 = 1_700_000_000;
const FAIL_PATH = "data/fails";
const prng = new Prng("fuse-fs");
const hasSetfattr = spawnSync("sh", ["-c", "command -v setfattr && command -v getfattr"]).status === 0;
const execFileAsync = promisify(execFile);

let work: string;
let oracle: string;
let converted: string;
let mnt: string;
let child: ChildProcess | undefined;
let childStderr = "";

function buildLayerSource(src: string): void {
  const meta = (p: string, mode: number, uid = 0, gid = 0, mtime = T0) => {
    chownSync(p, uid, gid);
    chmodSync(p, mode);
    utimesSync(p, mtime, mtime);
  };
  const file = (rel: string, content: string | Uint8Array, mode = 0o644, uid = 0, gid = 0, mtime = T0) => {
    const p = join(src, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, content);
    meta(p, mode, uid, gid, mtime);
  };
  mkdirSync(src, { recursive: true });
  file("etc/hostname", "skiff-fuse\n");
  file("etc/empty", "");
  file("data/multi", prng.bytes(3 * CHUNK + 1234), 0o644, 0, 0, T0 + 0.123456);
  file("data/exact", prng.bytes(2 * CHUNK));
  file(FAIL_PATH, prng.bytes(CHUNK + 5));
  file("usr/bin/busybox", prng.bytes(100_000), 0o755);
  linkSync(join(src, "usr/bin/busybox"), join(src, "usr/bin/ls"));
  linkSync(join(src, "usr/bin/busybox"), join(src, "usr/bin/cat"));
  file("usr/bin/su", "su\n", 0o4755);
  file("usr/bin/wall", "wall\n", 0o2755, 0, 5);
  file("home/user/f", "f", 0o640, 1000, 100);
  file("srv/big-ids", "b", 0o600, 200_000, 300_000);
  symlinkSync("busybox", join(src, "usr/bin/sh"));
  symlinkSync("/nonexistent/target", join(src, "etc/dangling"));
  lchownSync(join(src, "etc/dangling"), 1000, 1000);
  mkdirSync(join(src, "dev"));
  sh("mknod", [join(src, "dev/null"), "c", "1", "3"]);
  meta(join(src, "dev/null"), 0o666);
  sh("mknod", [join(src, "dev/loop0"), "b", "7", "0"]);
  meta(join(src, "dev/loop0"), 0o660, 0, 6);
  sh("mknod", [join(src, "dev/big"), "c", "250", "70000"]);
  meta(join(src, "dev/big"), 0o600);
  sh("mknod", [join(src, "dev/fifo"), "p"]);
  meta(join(src, "dev/fifo"), 0o600);
  mkdirSync(join(src, "tmp"));
  meta(join(src, "tmp"), 0o1777);
  mkdirSync(join(src, "var/mail"), { recursive: true });
  meta(join(src, "var/mail"), 0o2775, 0, 8);
  file("xattr/file", "with xattrs");
  file("xattr/many", "with a long xattr value and a long list of names");
  if (hasSetfattr) {
    sh("setfattr", ["-n", "user.mime", "-v", "text/plain", join(src, "xattr/file")]);
    sh("setfattr", ["-n", "user.bin", "-v", "0x0001ff", join(src, "xattr/file")]);
    // Longer than the 128 and 256 bytes a caller may try first.
    sh("setfattr", ["-n", "user.long", "-v", "v".repeat(1000), join(src, "xattr/many")]);
    for (let i = 0; i < 12; i++) sh("setfattr", ["-n", `user.a-rather-long-attribute-name-${i}`, "-v", "x", join(src, "xattr/many")]);
  }
  for (const rel of ["etc/dangling", "usr/bin/sh"]) lutimesSync(join(src, rel), T0, T0);
}

/** Like the harness's snapshot(), with async calls only (the mount is served by another process). */
async function snapshotAsync(root: string): Promise<Map<string, TreeEntry>> {
  const out = new Map<string, TreeEntry>();
  const pending = [""];
  for (let n = 0; pending.length && n < 10_000; n++) {
    const rel = pending.pop()!;
    const path = rel === "" ? root : join(root, rel);
    const st = await lstat(path, { bigint: true });
    const type = st.isFile() ? "file" : st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : st.isCharacterDevice() ? "char" : st.isBlockDevice() ? "block" : st.isFIFO() ? "fifo" : "socket";
    const e: TreeEntry = { type, mode: `0o${(Number(st.mode) & 0o7777).toString(8)}`, uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink) };
    if (type === "file") {
      e.size = Number(st.size);
      if (rel !== FAIL_PATH) e.sha256 = createHash("sha256").update(await readFile(path)).digest("hex");
    }
    if (type === "symlink") e.target = await readlink(path);
    if (type === "char" || type === "block") e.rdev = `${major(st.rdev)},${minor(st.rdev)}`;
    if (type !== "dir") e.mtimeNs = st.mtimeNs;
    out.set(rel, e);
    if (type === "dir") for (const name of await readdir(path)) pending.push(rel === "" ? name : `${rel}/${name}`);
  }
  return out;
}
const major = (d: bigint) => ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
const minor = (d: bigint) => (d & 0xffn) | ((d >> 12n) & ~0xffn);

/** fuse-native carries times in milliseconds; the failing file's content can't be read. */
function comparable(tree: Map<string, TreeEntry>): Map<string, TreeEntry> {
  return new Map(
    [...tree].map(([p, e]) => {
      const c: TreeEntry = { ...e, mtimeNs: e.mtimeNs === undefined ? undefined : e.mtimeNs / 1_000_000n };
      if (p === FAIL_PATH) delete c.sha256;
      return [p, c];
    }),
  );
}

async function startMount(engine: string, dir: string, mountpoint: string): Promise<void> {
  const c = spawnService(process.execPath, [MOUNT_SCRIPT, dir, mountpoint, `/${FAIL_PATH}`], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SKIFF_FUSE_ENGINE: engine } });
  child = c;
  let stdout = "";
  c.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  c.stderr!.on("data", (d: Buffer) => (childStderr += d.toString()));
  const exited = new Promise<never>((_, reject) => c.once("exit", (code) => reject(new Error(`mount process exited ${code}: ${childStderr}`))));
  exited.catch(() => {});
  const up = waitFor("the mount to come up", async () => {
    if (!stdout.includes("mounted")) return undefined;
    const names = await readdir(mountpoint);
    return names.includes("etc") && names.includes("usr") ? true : undefined;
  });
  await Promise.race([up, exited]);
}

beforeAll(async () => {
  work = tempDir("fuse-fs");
  const src = join(work, "src");
  buildLayerSource(src);
  const tarPath = join(work, "layer.tar");
  sh("tar", ["-c", "-f", tarPath, "--format=pax", "--xattrs", "--xattrs-include=*", "--sort=name", "--numeric-owner", "-C", src, "."]);
  const tar = await readFile(tarPath);
  const layout = new OciLayout(join(work, "layout"));
  writeImage(layout, "test", [{ bytes: gzipSync(tar), mediaType: MT.layerGzip, diffId: diffIdOf(tar) }]);

  oracle = join(work, "oracle");
  mkdirSync(oracle);
  sh("tar", ["-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", tarPath, "-C", oracle]);

  converted = join(work, "out");
  const c = skiff("convert", `${layout.dir}:test`, "--out", converted, "--chunk-size", "64k");
  if (c.code !== 0) throw new Error(`convert failed: ${c.stdout}${c.stderr}`);
}, 120_000);

afterAll(async () => {
  await teardown();
});

// Both FUSE front ends: libfuse 2 through fuse-native, and skiff's own over /dev/fuse (fuse/).
describe.each(["fuse-native", "dev-fuse"])("the FUSE mount of an image (%s)", (engine) => {
  beforeAll(async () => {
    childStderr = "";
    mnt = join(work, `mnt-${engine}`);
    await mkdir(mnt);
    await startMount(engine, converted, mnt);
  }, 60_000);

  afterAll(async () => {
    if (child) await stopChild(child);
    child = undefined;
    // Whatever the child managed, no mount outlives the file.
    for (const point of mnt ? await mountsUnder(mnt) : []) spawnSync("fusermount", ["-uz", point], { timeout: 10_000 });
  });

  it("is a read-only FUSE mount named skiff", async () => {
    const line = (await readFile("/proc/self/mounts", "utf8")).split("\n").find((l) => l.split(" ")[1] === mnt);
    expect(line).toBeDefined();
    const [source, , fstype, options] = line!.split(" ");
    expect(source).toBe("skiff");
    expect(fstype).toBe("fuse.skiff");
    expect(options!.split(",")).toContain("ro");
  });

  it("shows every entry as GNU tar extracts it: type, mode, owner, size, content, target, links, rdev, mtime", async () => {
    const want = comparable(snapshot(oracle));
    const got = comparable(await snapshotAsync(mnt));
    expect(diffTrees(want, got)).toEqual([]);
    expect(got.size).toBeGreaterThan(20);
  });

  it("gives the names of a hardlinked file one inode number, and other files their own", async () => {
    const [a, b, c, other] = await Promise.all(["usr/bin/busybox", "usr/bin/ls", "usr/bin/cat", "usr/bin/su"].map((p) => lstat(join(mnt, p))));
    expect(a!.nlink).toBe(3);
    expect(b!.ino).toBe(a!.ino);
    expect(c!.ino).toBe(a!.ino);
    expect(other!.ino).not.toBe(a!.ino);
  });

  it("reports blocks from the size, and directories list . and ..", async () => {
    const st = await lstat(join(mnt, "data/multi"));
    expect(st.blocks).toBe(Math.ceil(st.size / 512));
    const ls = await execFileAsync("ls", ["-a", join(mnt, "etc")]);
    expect(ls.stdout.split("\n").filter(Boolean)).toEqual([".", "..", "dangling", "empty", "hostname"]);
  });

  it("reads at any offset, across chunk boundaries", async () => {
    const whole = await readFile(join(oracle, "data/multi"));
    const fh = await open(join(mnt, "data/multi"), "r");
    try {
      for (const [at, len] of [[CHUNK - 10, 20], [0, 1], [2 * CHUNK + 5, CHUNK + 1000], [whole.length - 3, 100]] as const) {
        const buf = Buffer.alloc(len);
        const { bytesRead } = await fh.read(buf, 0, len, at);
        expect(bytesRead).toBe(Math.min(len, whole.length - at));
        expect(buf.subarray(0, bytesRead).equals(whole.subarray(at, at + bytesRead))).toBe(true);
      }
    } finally {
      await fh.close();
    }
  });

  it.skipIf(!hasSetfattr)("serves extended attributes, ENODATA when missing", async () => {
    const dump = await execFileAsync("getfattr", ["-d", "-e", "hex", join(mnt, "xattr/file")]);
    expect(dump.stdout).toContain(`user.mime=0x${Buffer.from("text/plain").toString("hex")}`);
    expect(dump.stdout).toContain("user.bin=0x0001ff");
    const missing = await execFileAsync("getfattr", ["-n", "user.none", join(mnt, "xattr/file")]).catch((err: { stderr: string }) => err);
    expect((missing as { stderr: string }).stderr).toMatch(/No such attribute/);
  });

  it.skipIf(!hasSetfattr)("a value or name list larger than the caller's buffer is ERANGE, so the caller retries bigger (not EIO)", async () => {
    // CPython's os.getxattr and os.listxattr try a small buffer first and retry on ERANGE only.
    const script = "import os, sys; p = sys.argv[1]; print(len(os.getxattr(p, 'user.long')), len(os.listxattr(p)))";
    const { stdout } = await execFileAsync("python3", ["-c", script, join(mnt, "xattr/many")]);
    expect(stdout.trim()).toBe("1000 13");
  });

  it("refuses every write with EROFS", async () => {
    await expect(writeFile(join(mnt, "etc/hostname"), "x")).rejects.toMatchObject({ code: "EROFS" });
    await expect(writeFile(join(mnt, "etc/new"), "x")).rejects.toMatchObject({ code: "EROFS" });
    await expect(mkdir(join(mnt, "newdir"))).rejects.toMatchObject({ code: "EROFS" });
    await expect(chmod(join(mnt, "etc/hostname"), 0o777)).rejects.toMatchObject({ code: "EROFS" });
  });

  it("answers EIO when the reader fails, and keeps serving", async () => {
    await expect(readFile(join(mnt, FAIL_PATH))).rejects.toMatchObject({ code: "EIO" });
    expect(await readFile(join(mnt, "etc/hostname"), "utf8")).toBe("skiff-fuse\n");
  });

  it("reports a full, read-only filesystem in statfs", async () => {
    const st = await statfs(mnt);
    expect(st.bsize).toBe(4096);
    expect(st.bfree).toBe(0);
    expect(st.files).toBeGreaterThan(20);
  });
});
