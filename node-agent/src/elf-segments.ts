// Where a program or shared library keeps what the dynamic loader reads before the code runs. The
// loader maps an ELF file and then touches, page fault by page fault, its symbol and relocation
// tables and its data (the segments that are not executable), usually far from the header and in
// no order a readahead would follow: in a cold start each of those faults waits for a chunk.
// Knowing them from the header, which is in the file's first chunk, lets them be fetched at once.
//
// The bytes are the image's and may be anything: everything is bounds-checked, and what comes out
// is only byte ranges inside the file.

const PT_LOAD = 1;
const PF_X = 1;
/** More program headers than any real ELF file has; past this the file is ignored. */
const MAX_PROGRAM_HEADERS = 64;

export interface ByteRange {
  start: number;
  /** Exclusive. */
  end: number;
}

export interface ProgramHeader {
  type: number;
  flags: number;
  /** Where the segment's bytes start in the file, and how many there are. */
  offset: number;
  fileSize: number;
  /** Where it is mapped (for turning the dynamic section's addresses into file offsets). */
  vaddr: number;
}

export interface ElfHeaders {
  is64: boolean;
  little: boolean;
  /** e_machine: which architecture, hence which system library directories. */
  machine: number;
  programs: ProgramHeader[];
}

/**
 * Readers of an ELF file's 16-, 32- and 64-bit words in its byte order. Offsets past 2^53 can't be
 * in a file we serve: a 64-bit word's high half is checked, not trusted (MAX_SAFE_INTEGER if set).
 */
export function elfWords(bytes: Uint8Array, little: boolean) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u32 = (o: number) => view.getUint32(o, little);
  return {
    u16: (o: number) => view.getUint16(o, little),
    u32,
    u64: (o: number) => (u32(o + (little ? 4 : 0)) === 0 ? u32(o + (little ? 0 : 4)) : Number.MAX_SAFE_INTEGER),
  };
}

/** The ELF header and program headers from a file's first bytes; null for anything that is not an ELF file whose program headers lie within `head`. */
export function elfHeaders(head: Uint8Array): ElfHeaders | null {
  if (head.length < 52 || head[0] !== 0x7f || head[1] !== 0x45 || head[2] !== 0x4c || head[3] !== 0x46) return null;
  const is64 = head[4] === 2;
  if (!is64 && head[4] !== 1) return null;
  if (head[5] !== 1 && head[5] !== 2) return null;
  const little = head[5] === 1;
  const { u16, u32, u64 } = elfWords(head, little);
  if (is64 && head.length < 64) return null;
  const phoff = is64 ? u64(0x20) : u32(0x1c);
  const phentsize = u16(is64 ? 0x36 : 0x2a);
  const phnum = u16(is64 ? 0x38 : 0x2c);
  if (phentsize < (is64 ? 56 : 32) || phnum === 0 || phnum > MAX_PROGRAM_HEADERS) return null;
  if (phoff + phnum * phentsize > head.length) return null;
  const programs: ProgramHeader[] = [];
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    programs.push({
      type: u32(p),
      flags: u32(is64 ? p + 4 : p + 24),
      offset: is64 ? u64(p + 8) : u32(p + 4),
      vaddr: is64 ? u64(p + 16) : u32(p + 8),
      fileSize: is64 ? u64(p + 32) : u32(p + 16),
    });
  }
  return { is64, little, machine: u16(0x12), programs };
}

/**
 * The file ranges of the loadable segments that are not executable (read-only data, relocations,
 * symbols, writable data), from an ELF file's first bytes; [] for anything that is not an ELF
 * file whose program headers lie within `head`.
 */
export function elfDataSegments(head: Uint8Array, fileSize: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (const p of elfHeaders(head)?.programs ?? []) {
    if (p.type !== PT_LOAD || p.flags & PF_X || p.fileSize === 0 || p.offset >= fileSize) continue;
    out.push({ start: p.offset, end: Math.min(fileSize, p.offset + p.fileSize) });
  }
  return out;
}
