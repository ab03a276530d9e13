// The ELF program header reader behind program prefetch: real binaries against readelf, both word
// sizes and byte orders, and headers that lie.
import { execFileSync } from "node:child_process";
import { readFileSync, statSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { elfDataSegments } from "../src/elf-segments.ts";

interface Segment {
  type: number;
  flags: number;
  offset: number;
  size: number;
}

/** An ELF header and its program headers (class 1 or 2, little or big endian), padded to `length`. */
function elfHead(segments: Segment[], o: { is64?: boolean; little?: boolean; length?: number; phoff?: number } = {}): Uint8Array {
  const is64 = o.is64 ?? true;
  const little = o.little ?? true;
  const phoff = o.phoff ?? (is64 ? 64 : 52);
  const entry = is64 ? 56 : 32;
  const bytes = new Uint8Array(o.length ?? phoff + segments.length * entry);
  const view = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, little ? 1 : 2, 1]);
  if (is64) {
    view.setBigUint64(0x20, BigInt(phoff), little);
    view.setUint16(0x36, entry, little);
    view.setUint16(0x38, segments.length, little);
  } else {
    view.setUint32(0x1c, phoff, little);
    view.setUint16(0x2a, entry, little);
    view.setUint16(0x2c, segments.length, little);
  }
  segments.forEach((s, i) => {
    const p = phoff + i * entry;
    if (p + entry > bytes.length) return;
    view.setUint32(p, s.type, little);
    if (is64) {
      view.setUint32(p + 4, s.flags, little);
      view.setBigUint64(p + 8, BigInt(s.offset), little);
      view.setBigUint64(p + 32, BigInt(s.size), little);
    } else {
      view.setUint32(p + 4, s.offset, little);
      view.setUint32(p + 16, s.size, little);
      view.setUint32(p + 24, s.flags, little);
    }
  });
  return bytes;
}

const LOAD = 1;
const R = 4;
const RW = 6;
const RX = 5;
const segments: Segment[] = [
  { type: 6, flags: R, offset: 64, size: 0x200 }, // PT_PHDR: not loaded on its own
  { type: LOAD, flags: R, offset: 0, size: 0x1000 },
  { type: LOAD, flags: RX, offset: 0x1000, size: 0x8000 },
  { type: LOAD, flags: R, offset: 0x9000, size: 0x2000 },
  { type: LOAD, flags: RW, offset: 0xb100, size: 0x900 },
];
const expected = [
  { start: 0, end: 0x1000 },
  { start: 0x9000, end: 0xb000 },
  { start: 0xb100, end: 0xba00 },
];

describe("elfDataSegments", () => {
  test.each([
    ["64-bit little-endian", { is64: true, little: true }],
    ["64-bit big-endian", { is64: true, little: false }],
    ["32-bit little-endian", { is64: false, little: true }],
    ["32-bit big-endian", { is64: false, little: false }],
  ])("%s: the loadable segments that are not code", (_name, o) => {
    expect(elfDataSegments(elfHead(segments, o), 0x10000)).toEqual(expected);
  });

  test("segments are cut at the end of the file; ones starting past it are dropped", () => {
    expect(elfDataSegments(elfHead(segments), 0xb400)).toEqual([...expected.slice(0, 2), { start: 0xb100, end: 0xb400 }]);
    expect(elfDataSegments(elfHead(segments), 0x9000)).toEqual(expected.slice(0, 1));
  });

  test("not ELF, or headers that lie: nothing", () => {
    const good = elfHead(segments);
    const spoiled = (f: (b: Uint8Array, v: DataView) => void) => {
      const b = good.slice();
      f(b, new DataView(b.buffer));
      return elfDataSegments(b, 0x10000);
    };
    expect(elfDataSegments(new TextEncoder().encode("#!/bin/sh\necho not a program\n".repeat(4)), 1000)).toEqual([]);
    expect(elfDataSegments(good.subarray(0, 40), 0x10000)).toEqual([]); // shorter than a header
    expect(elfDataSegments(good.subarray(0, good.length - 1), 0x10000)).toEqual([]); // program headers cut off
    expect(spoiled((b) => (b[4] = 3))).toEqual([]); // no such class
    expect(spoiled((b) => (b[5] = 0))).toEqual([]); // no such byte order
    expect(spoiled((_b, v) => v.setUint16(0x36, 20, true))).toEqual([]); // entries too small
    expect(spoiled((_b, v) => v.setUint16(0x38, 65, true))).toEqual([]); // too many entries
    expect(spoiled((_b, v) => v.setBigUint64(0x20, 2n ** 40n, true))).toEqual([]); // headers far away
    expect(spoiled((_b, v) => v.setUint32(0x24, 1, true))).toEqual([]); // offset past 2^32: not trusted
    // A segment offset past 2^53: dropped, the others kept.
    expect(spoiled((_b, v) => v.setUint32(64 + 4 * 56 + 12, 0xffffffff, true))).toEqual(expected.slice(0, 2));
  });

  test.each(["/bin/ls", process.execPath])("%s: what readelf says", (path) => {
    const wanted = execFileSync("readelf", ["-lW", path], { encoding: "utf8" })
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[0] === "LOAD" && !f.slice(7, -1).join("").includes("E"))
      .map((f) => ({ start: Number(f[1]), end: Number(f[1]) + Number(f[4]) }))
      .filter((r) => r.end > r.start);
    expect(wanted.length).toBeGreaterThan(0);
    const head = readFileSync(path).subarray(0, 64 * 1024);
    expect(elfDataSegments(head, statSync(path).size)).toEqual(wanted);
  });
});
