// Which shared libraries a program or library loads, found as the dynamic loader finds them: its
// interpreter (PT_INTERP) and the names its dynamic section needs (DT_NEEDED), looked up in its run
// paths (DT_RUNPATH, DT_RPATH) and the system's library directories, in the image's own tree. In a
// cold start the loader opens each library only once it has read the one before, one round trip
// after another; knowing them all from the first object's headers lets them be fetched together.
//
// The bytes are the image's and may be anything: every offset is bounds-checked, and what comes out
// is only names looked up in the image's tree.
import type { Bootstrap } from "../../src/format/decode.ts";
import { elfWords, type ByteRange, type ElfHeaders } from "./elf-segments.ts";

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_STRTAB = 5;
const DT_STRSZ = 10;
const DT_RPATH = 15;
const DT_RUNPATH = 29;

/** Bigger than any real dynamic section (a few hundred bytes). */
const MAX_DYNAMIC_BYTES = 64 * 1024;
/** More libraries than a real program names directly. */
const MAX_NEEDED = 128;
const MAX_NAME_BYTES = 4096;
/** As Linux allows in one path lookup. */
const MAX_SYMLINKS = 40;

/** The multiarch directory of each architecture, by e_machine (Debian's and Ubuntu's layout). */
const MULTIARCH = new Map<number, string>([
  [3, "i386-linux-gnu"],
  [21, "powerpc64le-linux-gnu"],
  [22, "s390x-linux-gnu"],
  [40, "arm-linux-gnueabihf"],
  [62, "x86_64-linux-gnu"],
  [183, "aarch64-linux-gnu"],
  [243, "riscv64-linux-gnu"],
]);

export interface NeededLibraries {
  /** The program interpreter's path, when the object names one (programs do, libraries don't). */
  interp: string | null;
  /** DT_NEEDED names, in order. */
  needed: string[];
  /** DT_RUNPATH, or DT_RPATH when there is none: directories searched first. */
  runPath: string[];
}

/**
 * What an ELF object loads, read through `read` (file bytes [start, end), which it may fetch). Null
 * when the object is not dynamically linked or its headers don't hold together.
 */
export async function neededLibraries(h: ElfHeaders, fileSize: number, read: (range: ByteRange) => Promise<Uint8Array>): Promise<NeededLibraries | null> {
  const within = (offset: number, size: number, max: number): ByteRange | null =>
    size > 0 && size <= max && offset < fileSize && offset + size <= fileSize ? { start: offset, end: offset + size } : null;
  const interpHeader = h.programs.find((p) => p.type === PT_INTERP);
  const interpRange = interpHeader && within(interpHeader.offset, interpHeader.fileSize, MAX_NAME_BYTES);
  const dynamicHeader = h.programs.find((p) => p.type === PT_DYNAMIC);
  const dynamicRange = dynamicHeader && within(dynamicHeader.offset, dynamicHeader.fileSize, MAX_DYNAMIC_BYTES);
  if (!dynamicRange) return null;
  const [interpBytes, dynamic] = await Promise.all([interpRange ? read(interpRange) : null, read(dynamicRange)]);

  // The dynamic section: (tag, value) pairs of the object's word size, up to DT_NULL.
  const { u32, u64 } = elfWords(dynamic, h.little);
  const word = h.is64 ? 8 : 4;
  const at = h.is64 ? u64 : u32;
  const neededAt: number[] = [];
  let runPathAt: number | null = null;
  let rPathAt: number | null = null;
  let strtab: number | null = null;
  let strsz: number | null = null;
  for (let o = 0; o + 2 * word <= dynamic.length; o += 2 * word) {
    const tag = at(o);
    const value = at(o + word);
    if (tag === DT_NULL) break;
    if (tag === DT_NEEDED && neededAt.length < MAX_NEEDED) neededAt.push(value);
    else if (tag === DT_RUNPATH) runPathAt = value;
    else if (tag === DT_RPATH) rPathAt = value;
    else if (tag === DT_STRTAB) strtab = value;
    else if (tag === DT_STRSZ) strsz = value;
  }
  if (strtab === null || strsz === null) return null;
  // DT_STRTAB is an address: the loadable segment that maps it says where it is in the file.
  const load = h.programs.find((p) => p.type === PT_LOAD && strtab! >= p.vaddr && strtab! < p.vaddr + p.fileSize);
  if (!load) return null;
  const tableStart = load.offset + (strtab - load.vaddr);
  const tableSize = Math.min(strsz, load.vaddr + load.fileSize - strtab, fileSize - tableStart);
  // Each name on its own: a program that exports its symbols has a string table of megabytes.
  const text = async (offset: number): Promise<string | null> => {
    const range = offset < tableSize ? within(tableStart + offset, Math.min(MAX_NAME_BYTES + 1, tableSize - offset), MAX_NAME_BYTES + 1) : null;
    if (!range) return null;
    const bytes = await read(range);
    const end = bytes.indexOf(0);
    return end > 0 ? new TextDecoder().decode(bytes.subarray(0, end)) : null;
  };
  const paths = runPathAt ?? rPathAt;
  const [needed, runPath] = await Promise.all([Promise.all(neededAt.map(text)), paths === null ? null : text(paths)]);
  const interpEnd = interpBytes ? interpBytes.indexOf(0) : -1;
  return {
    interp: interpBytes ? new TextDecoder().decode(interpEnd < 0 ? interpBytes : interpBytes.subarray(0, interpEnd)) : null,
    needed: needed.filter((n): n is string => n !== null),
    runPath: (runPath ?? "").split(":").filter(Boolean),
  };
}

/**
 * Where the loader would find library `name` for an object of architecture `machine`: a name with
 * a slash is a path; otherwise the run path's absolute directories (`$ORIGIN` ones are skipped),
 * then the system's. The inode of the regular file it resolves to, or null.
 */
export function findLibrary(b: Bootstrap, name: string, runPath: string[], machine: number): number | null {
  if (name.includes("/")) return name.startsWith("/") ? resolveFile(b, name) : null;
  const multiarch = MULTIARCH.get(machine);
  const system = [...(multiarch ? [`/lib/${multiarch}`, `/usr/lib/${multiarch}`] : []), "/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"];
  for (const dir of [...runPath.filter((d) => d.startsWith("/")), ...system]) {
    const inode = resolveFile(b, `${dir}/${name}`);
    if (inode !== null) return inode;
  }
  return null;
}

/** The regular file at absolute `path` in the image, following symbolic links (absolute ones from the image's root); null if there is none. */
export function resolveFile(b: Bootstrap, path: string): number | null {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  const dirs: number[] = [0]; // the directories walked through, root first
  let links = 0;
  while (parts.length > 0) {
    const part = parts.shift()!;
    const dir = dirs[dirs.length - 1]!;
    if (part === "..") {
      if (dirs.length > 1) dirs.pop();
      continue;
    }
    const inode = b.child(dir, part);
    if (inode === null) return null;
    const type = b.inode(inode).type;
    if (type === "symlink") {
      if (++links > MAX_SYMLINKS) return null;
      const target = b.readlink(inode);
      parts.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      if (target.startsWith("/")) dirs.length = 1;
    } else if (parts.length > 0) {
      if (type !== "dir") return null;
      dirs.push(inode);
    } else {
      return type === "file" ? inode : null;
    }
  }
  return null;
}
