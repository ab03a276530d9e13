// Library prefetch's two halves: what an ELF object loads (real binaries against readelf, and
// dynamic sections that lie), and where the loader would find it in an image's tree (run paths,
// multiarch directories, symbolic links such as merged /usr and Debian's alternatives).
import { execFileSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { baseNode, newDir, type FsNode } from "../../src/format/model.ts";
import { findLibrary, neededLibraries, resolveFile } from "../src/elf-libraries.ts";
import { elfHeaders, type ByteRange } from "../src/elf-segments.ts";

const X86_64 = 62;

/** What an object on this machine loads, read the way the agent reads it: ranges of the file. */
async function librariesOf(path: string) {
  const bytes = readFileSync(path);
  const h = elfHeaders(bytes.subarray(0, 64 * 1024))!;
  const asked: ByteRange[] = [];
  const got = await neededLibraries(h, statSync(path).size, async (range) => (asked.push(range), bytes.subarray(range.start, range.end)));
  return { got, asked };
}

const libc = execFileSync("sh", ["-c", "ldd /bin/ls | awk '/libc.so/ {print $3}'"], { encoding: "utf8" }).trim();

describe("neededLibraries", () => {
  test.each([process.execPath, "/bin/ls", libc])("%s: what readelf -d and -l say", async (path) => {
    const dynamic = execFileSync("readelf", ["-dW", path], { encoding: "utf8" });
    const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1]);
    const runPath = /\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]/.exec(dynamic)?.[1]?.split(":") ?? [];
    const interp = /Requesting program interpreter: (.+)\]/.exec(execFileSync("readelf", ["-lW", path], { encoding: "utf8" }))?.[1] ?? null;
    expect(needed.length).toBeGreaterThan(0);
    const { got, asked } = await librariesOf(path);
    expect(got).toEqual({ interp, needed, runPath });
    // Only the interpreter's name, the dynamic section and the string table are read: a few KiB.
    expect(asked.reduce((n, r) => n + r.end - r.start, 0)).toBeLessThan(256 * 1024);
  });

  test("dynamic sections that lie: out of the file, too big, no string table, names past its end", async () => {
    const bytes = readFileSync(process.execPath);
    const size = statSync(process.execPath).size;
    const h = elfHeaders(bytes.subarray(0, 64 * 1024))!;
    const read = async (r: ByteRange) => bytes.subarray(r.start, r.end);
    const dynamicIndex = h.programs.findIndex((p) => p.type === 2);
    const withDynamic = (change: Partial<(typeof h.programs)[number]>) => ({ ...h, programs: h.programs.map((p, i) => (i === dynamicIndex ? { ...p, ...change } : p)) });
    expect(await neededLibraries(withDynamic({ offset: size - 8, fileSize: 64 }), size, read)).toBeNull(); // past the end
    expect(await neededLibraries(withDynamic({ fileSize: 1 << 20 }), size, read)).toBeNull(); // no dynamic section is that big
    expect(await neededLibraries({ ...h, programs: h.programs.filter((p) => p.type !== 2) }, size, read)).toBeNull(); // static
    // A dynamic section of zeros: DT_NULL first, no string table.
    expect(await neededLibraries(h, size, async (r) => new Uint8Array(r.end - r.start))).toBeNull();
    // DT_STRTAB at an address no loadable segment maps.
    expect(await neededLibraries({ ...h, programs: h.programs.filter((p) => p.type !== 1) }, size, read)).toBeNull();
    // Names that are empty or never end: dropped, not read past their bound.
    const dynamic = h.programs[dynamicIndex]!;
    const inDynamic = (r: ByteRange) => r.start >= dynamic.offset && r.end <= dynamic.offset + dynamic.fileSize;
    const asked: ByteRange[] = [];
    const blank = await neededLibraries(h, size, async (r) => (asked.push(r), inDynamic(r) ? bytes.subarray(r.start, r.end) : new Uint8Array(r.end - r.start)));
    expect(blank).toMatchObject({ needed: [], runPath: [] });
    const unending = await neededLibraries(h, size, async (r) => (inDynamic(r) ? bytes.subarray(r.start, r.end) : new Uint8Array(r.end - r.start).fill(0x41)));
    expect(unending).toMatchObject({ needed: [] });
    expect(Math.max(...asked.map((r) => r.end - r.start))).toBeLessThanOrEqual(4097);
  });

  test("not an ELF file: no headers", () => {
    expect(elfHeaders(new TextEncoder().encode("#!/bin/sh\n".repeat(10)))).toBeNull();
  });
});

const file = (): FsNode => ({ ...baseNode("file", 0o644), size: 0 });
const link = (target: string): FsNode => ({ ...baseNode("symlink", 0o777), target, size: Buffer.byteLength(target) });
const dir = (entries: Record<string, FsNode>) => newDir({ children: new Map(Object.entries(entries)) });

/** A merged-/usr Debian tree: /lib → usr/lib, libblas through an alternatives link, a loop, and a library in /opt. */
function image(): Bootstrap {
  const root = dir({
    lib: link("usr/lib"),
    lib64: link("usr/lib64"),
    etc: dir({ alternatives: dir({ "libblas.so.3": link("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3") }) }),
    usr: dir({
      lib: dir({
        "x86_64-linux-gnu": dir({
          "libc.so.6": file(),
          "libm.so.6": link("libm.so.6.real"),
          "libm.so.6.real": file(),
          "libblas.so.3": link("/etc/alternatives/libblas.so.3"),
          blas: dir({ "libblas.so.3": file() }),
          "libloop.so": link("libloop.so"),
          "libdir.so": dir({}),
          "libup.so": link("../x86_64-linux-gnu/./libc.so.6"),
        }),
        "libplain.so": file(),
      }),
      lib64: dir({ "ld-linux-x86-64.so.2": link("../lib/x86_64-linux-gnu/ld.so") }),
    }),
    opt: dir({ app: dir({ lib: dir({ "libapp.so": file(), "libc.so.6": file() }) }) }),
  });
  root.children!.get("usr")!.children!.get("lib")!.children!.get("x86_64-linux-gnu")!.children!.set("ld.so", file());
  return Bootstrap.decode(encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs: [], chunks: [], root }));
}

describe("findLibrary", () => {
  const b = image();
  const at = (path: string) => b.lookup(path);

  test("system directories by architecture, through merged /usr and chains of links", () => {
    expect(findLibrary(b, "libc.so.6", [], X86_64)).toBe(at("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    expect(findLibrary(b, "libm.so.6", [], X86_64)).toBe(at("/usr/lib/x86_64-linux-gnu/libm.so.6.real"));
    expect(findLibrary(b, "libblas.so.3", [], X86_64)).toBe(at("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3"));
    expect(findLibrary(b, "libplain.so", [], X86_64)).toBe(at("/usr/lib/libplain.so"));
    // Another architecture skips the x86-64 directory.
    expect(findLibrary(b, "libc.so.6", [], 183)).toBeNull();
  });

  test("the run path comes first; $ORIGIN and relative entries are skipped", () => {
    expect(findLibrary(b, "libc.so.6", ["/opt/app/lib"], X86_64)).toBe(at("/opt/app/lib/libc.so.6"));
    expect(findLibrary(b, "libapp.so", ["$ORIGIN/../lib", "opt/app/lib"], X86_64)).toBeNull();
    expect(findLibrary(b, "libapp.so", ["/nowhere", "/opt/app/lib"], X86_64)).toBe(at("/opt/app/lib/libapp.so"));
  });

  test("paths: the interpreter through two links; relative paths are not looked up", () => {
    expect(findLibrary(b, "/lib64/ld-linux-x86-64.so.2", [], X86_64)).toBe(at("/usr/lib/x86_64-linux-gnu/ld.so"));
    expect(findLibrary(b, "lib/libplain.so", [], X86_64)).toBeNull();
  });

  test("loops, directories, .. and names that are not there resolve to nothing or to the right file", () => {
    expect(resolveFile(b, "/lib/x86_64-linux-gnu/libloop.so")).toBeNull();
    expect(resolveFile(b, "/lib/x86_64-linux-gnu/libdir.so")).toBeNull();
    expect(resolveFile(b, "/lib/x86_64-linux-gnu/libc.so.6/x")).toBeNull();
    expect(resolveFile(b, "/../../usr/lib/libplain.so")).toBe(at("/usr/lib/libplain.so"));
    expect(resolveFile(b, "/usr/lib/x86_64-linux-gnu/libup.so")).toBe(at("/usr/lib/x86_64-linux-gnu/libc.so.6"));
    expect(findLibrary(b, "libnothere.so", [], X86_64)).toBeNull();
  });
});
