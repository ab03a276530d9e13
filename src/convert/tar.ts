// Streaming tar reader for OCI layers: ustar, v7, GNU (long names, base-256 numbers) and PAX
// (local and global extended headers). It holds one header block plus the chunk the source last
// delivered, so memory stays flat however large the layer or its files are. Entry semantics follow
// Go's archive/tar where tar implementations disagree, because that is what containerd and Docker
// use to unpack the same layers.

export type TarEntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface TarEntry {
  /** As in the archive after PAX/GNU long-name resolution, UTF-8 decoded; not normalised. */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Body length in bytes (0 for everything but files). */
  size: number;
  /** Seconds since the epoch (integer part). */
  mtime: number;
  /** Fractional part from a PAX mtime record, else 0. */
  mtimeNsec: number;
  /** Symlink target or hardlink target path ("" otherwise). */
  linkName: string;
  devMajor: number;
  devMinor: number;
  /** From PAX `SCHILY.xattr.<name>` records; values are the raw bytes. */
  xattrs: Map<string, Uint8Array>;
}

export interface TarEntryWithBody extends TarEntry {
  /** Yields exactly `size` bytes in whatever chunk sizes arrive; may be called at most once, before the next entry. */
  body(): AsyncIterable<Uint8Array>;
}

export class TarError extends Error {
  override name = "TarError";
}

export interface TarReaderOptions {
  /** Largest accepted PAX extended header body (default 1 MiB). */
  maxPaxHeaderBytes?: number;
  /** Largest accepted GNU long name / long link body (default 64 KiB). */
  maxLongNameBytes?: number;
  /**
   * Called with each piece the source delivered once the reader has moved past it, for its
   * producer to write over. Only for a caller that is done with every body piece before it reads on.
   */
  release?: (piece: Uint8Array) => void;
}

const BLOCK = 512;
const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Lenient = new TextDecoder("utf-8");

/**
 * Reads entries one at a time. Each entry's body must be read (or is skipped automatically) before
 * the next entry. After the end-of-archive marker the rest of the source is read and discarded, so a
 * decompressor upstream still checks its trailer; leaving early (break, error) cancels the source.
 */
export function readTar(source: ReadableStream<Uint8Array>, options: TarReaderOptions = {}): AsyncIterable<TarEntryWithBody> {
  const limits = {
    pax: options.maxPaxHeaderBytes ?? 1024 * 1024,
    longName: options.maxLongNameBytes ?? 64 * 1024,
  };
  return readEntries(source, limits, options.release);
}

interface Limits {
  pax: number;
  longName: number;
}

/** Where an error happened, for one-line messages. */
interface Place {
  offset: number;
  index: number;
  path?: string;
}

function fail(what: string, at: Place): never {
  const entry = at.path === undefined ? `entry ${at.index}` : `entry ${at.index} ${JSON.stringify(at.path)}`;
  throw new TarError(`tar: ${what} (${entry}, archive offset ${at.offset})`);
}

// ---------------------------------------------------------------------------------------------
// Byte source: exact reads over arbitrary chunking, with views into incoming chunks where possible.

class ByteSource {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  readonly #release: ((piece: Uint8Array) => void) | undefined;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #ended = false;
  readonly #scratch = new Uint8Array(BLOCK);
  /** Bytes consumed from the start of the archive. */
  offset = 0;

  constructor(reader: ReadableStreamDefaultReader<Uint8Array>, release?: (piece: Uint8Array) => void) {
    this.#reader = reader;
    this.#release = release;
  }

  /** Makes unread bytes available; false at end of stream. */
  async #fill(): Promise<boolean> {
    while (this.#pos >= this.#chunk.byteLength) {
      if (this.#ended) return false;
      // Every view of it handed out is used by now (TarReaderOptions.release).
      if (this.#chunk !== EMPTY) this.#release?.(this.#chunk);
      this.#chunk = EMPTY;
      const { done, value } = await this.#reader.read();
      if (done) {
        this.#ended = true;
        this.#chunk = EMPTY;
        this.#pos = 0;
        return false;
      }
      this.#chunk = value;
      this.#pos = 0;
    }
    return true;
  }

  /** Up to `max` bytes as a view of the current chunk; null at end of stream. */
  async readSome(max: number): Promise<Uint8Array | null> {
    // Awaited only when the chunk is used up, not for bytes already here.
    if (this.#pos >= this.#chunk.byteLength && !(await this.#fill())) return null;
    const n = Math.min(max, this.#chunk.byteLength - this.#pos);
    const out = this.#chunk.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    this.offset += n;
    return out;
  }

  /** Fills `dst` completely; returns how many bytes it got (fewer only at end of stream). */
  async readInto(dst: Uint8Array): Promise<number> {
    let got = 0;
    while (got < dst.byteLength) {
      const piece = await this.readSome(dst.byteLength - got);
      if (piece === null) break;
      dst.set(piece, got);
      got += piece.byteLength;
    }
    return got;
  }

  /**
   * The next 512-byte block, valid only until the next read; null at a clean end of stream,
   * "partial" if the stream ended inside the block.
   */
  async readBlock(): Promise<Uint8Array | null | "partial"> {
    if (this.#pos >= this.#chunk.byteLength && !(await this.#fill())) return null;
    if (this.#chunk.byteLength - this.#pos >= BLOCK) {
      const view = this.#chunk.subarray(this.#pos, this.#pos + BLOCK);
      this.#pos += BLOCK;
      this.offset += BLOCK;
      return view;
    }
    const got = await this.readInto(this.#scratch);
    return got === BLOCK ? this.#scratch : "partial";
  }

  /** Discards `n` bytes; false if the stream ended first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      const piece = await this.readSome(n);
      if (piece === null) return false;
      n -= piece.byteLength;
    }
    return true;
  }

  /** Reads and discards everything left. */
  async drain(): Promise<void> {
    this.#chunk = EMPTY;
    this.#pos = 0;
    while (!this.#ended) {
      const { done } = await this.#reader.read();
      if (done) this.#ended = true;
    }
    this.#reader.releaseLock();
  }

  async cancel(reason: unknown): Promise<void> {
    this.#chunk = EMPTY;
    try {
      await this.#reader.cancel(reason);
    } catch {
      // The source already failed; its own error is the one that matters.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Header fields.

/** The bytes of a NUL-terminated field, up to the first NUL. */
function cString(bytes: Uint8Array): Uint8Array {
  const nul = bytes.indexOf(0);
  return nul < 0 ? bytes : bytes.subarray(0, nul);
}

function field(block: Uint8Array, start: number, length: number): Uint8Array {
  return cString(block.subarray(start, start + length));
}

/** Strict UTF-8: a name that can't be represented must not be silently altered. `from` says where it came from. */
function decodeName(bytes: Uint8Array, what: string, from: string, at: Place): string {
  try {
    return utf8.decode(bytes);
  } catch {
    return fail(`${what} is not valid UTF-8 (${from}): ${JSON.stringify(utf8Lenient.decode(bytes))}`, at);
  }
}

/**
 * A numeric header field: octal digits with optional leading spaces and trailing spaces/NULs, or
 * GNU base-256 (high bit of the first byte set; the next bit is the sign).
 */
function numeric(block: Uint8Array, start: number, length: number, name: string, at: Place, signed = false): number {
  // Read in place: a view per field was most of a header's garbage.
  const end = start + length;
  const first = block[start]!;
  if (first & 0x80) {
    if (first & 0x40) {
      // Only times may be negative (before 1970): a two's-complement number after the marker bit.
      if (!signed) fail(`negative base-256 ${name}`, at);
      let value = BigInt(first & 0x7f);
      for (let i = start + 1; i < end; i++) value = (value << 8n) | BigInt(block[i]!);
      const signedValue = value - (1n << BigInt(7 + 8 * (length - 1)));
      if (signedValue < BigInt(Number.MIN_SAFE_INTEGER)) fail(`base-256 ${name} too small`, at);
      return Number(signedValue);
    }
    let value = first & 0x3f;
    for (let i = start + 1; i < end; i++) {
      value = value * 256 + block[i]!;
      if (value > Number.MAX_SAFE_INTEGER) fail(`base-256 ${name} too large`, at);
    }
    return value;
  }
  let i = start;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) i++;
  let value = 0;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c < 0x30 || c > 0x37) break;
    value = value * 8 + (c - 0x30);
  }
  for (; i < end; i++) {
    if (block[i] !== 0x20 && block[i] !== 0) fail(`invalid octal ${name} ${JSON.stringify(utf8Lenient.decode(block.subarray(start, end)))}`, at);
  }
  return value;
}

function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Accepts both the unsigned sum (POSIX) and the signed sum some old tars wrote. */
function verifyChecksum(block: Uint8Array, at: Place): void {
  const stored = numeric(block, 148, 8, "checksum", at);
  let unsigned = 8 * 0x20;
  let signed = 8 * 0x20;
  for (let i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    const b = block[i]!;
    unsigned += b;
    signed += b < 0x80 ? b : b - 0x100;
  }
  if (stored !== unsigned && stored !== signed) {
    fail(`bad header checksum: stored ${stored.toString(8)}, computed ${unsigned.toString(8)}`, at);
  }
}

function headerFormat(block: Uint8Array): "ustar" | "gnu" | "v7" {
  const m = block.subarray(257, 265);
  const isUstar = m[0] === 0x75 && m[1] === 0x73 && m[2] === 0x74 && m[3] === 0x61 && m[4] === 0x72; // "ustar"
  if (!isUstar) return "v7";
  if (m[5] === 0) return "ustar";
  if (m[5] === 0x20 && m[6] === 0x20 && m[7] === 0) return "gnu";
  return "v7";
}

/** The ustar name, joined with its prefix; star archives (trailer "tar\0") have a shorter prefix. */
function ustarName(block: Uint8Array, format: "ustar" | "gnu" | "v7"): Uint8Array {
  const name = field(block, 0, 100);
  if (format !== "ustar") return name;
  const isStar = block[508] === 0x74 && block[509] === 0x61 && block[510] === 0x72 && block[511] === 0;
  const prefix = field(block, 345, isStar ? 131 : 155);
  if (prefix.byteLength === 0) return name;
  const joined = new Uint8Array(prefix.byteLength + 1 + name.byteLength);
  joined.set(prefix);
  joined[prefix.byteLength] = 0x2f; // '/'
  joined.set(name, prefix.byteLength + 1);
  return joined;
}

// ---------------------------------------------------------------------------------------------
// PAX extended headers.

/** Records as key → raw value bytes; an empty value means "unset" (POSIX). */
type PaxRecords = Map<string, Uint8Array>;

/** Parses `"%d %s=%s\n"` records; the length counts the whole record including itself and the newline. */
function parsePax(data: Uint8Array, at: Place): PaxRecords {
  const records: PaxRecords = new Map();
  let pos = 0;
  while (pos < data.byteLength) {
    if (data[pos] === 0 && data.subarray(pos).every((b) => b === 0)) break; // NUL padding after the last record
    let length = 0;
    let i = pos;
    while (i < data.byteLength && data[i]! >= 0x30 && data[i]! <= 0x39 && i - pos < 16) {
      length = length * 10 + (data[i]! - 0x30);
      i++;
    }
    if (i === pos || data[i] !== 0x20) fail(`malformed PAX record at byte ${pos} of the extended header: bad length`, at);
    const end = pos + length;
    if (end > data.byteLength || end <= i + 1) fail(`malformed PAX record at byte ${pos} of the extended header: length ${length} does not fit`, at);
    if (data[end - 1] !== 0x0a) fail(`malformed PAX record at byte ${pos} of the extended header: length ${length} does not end at a newline`, at);
    const body = data.subarray(i + 1, end - 1);
    const eq = body.indexOf(0x3d); // '='
    if (eq <= 0) fail(`malformed PAX record at byte ${pos} of the extended header: no keyword`, at);
    const key = decodeName(body.subarray(0, eq), "PAX keyword", `record at byte ${pos}`, at);
    records.set(key, body.subarray(eq + 1));
    pos = end;
  }
  return records;
}

/** A PAX decimal: digits; mtime may also be negative (before 1970) and have a fraction. */
function paxNumber(records: PaxRecords, key: string, at: Place): { int: number; nsec: number } | undefined {
  const raw = records.get(key);
  if (raw === undefined || raw.byteLength === 0) return undefined;
  const text = utf8Lenient.decode(raw);
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m || ((m[1] || m[3] !== undefined) && key !== "mtime")) fail(`invalid PAX ${key} ${JSON.stringify(text)}`, at);
  const whole = Number(m[2]);
  if (!Number.isSafeInteger(whole)) fail(`PAX ${key} ${text} is too large`, at);
  const fraction = m[3] ? Number(m[3].slice(0, 9).padEnd(9, "0")) : 0;
  // -1.5 s is 2 s before the epoch plus 0.5 s: seconds round down, nanoseconds count up.
  if (m[1] && fraction > 0) return { int: -whole - 1, nsec: 1_000_000_000 - fraction };
  return { int: m[1] ? -whole : whole, nsec: fraction };
}

/** A PAX string value (path, linkpath, …): never containing NUL. Names are strict UTF-8 (`what` set). */
function paxString(records: PaxRecords, key: string, at: Place, what?: string): string | undefined {
  const raw = records.get(key);
  if (raw === undefined || raw.byteLength === 0) return undefined;
  if (raw.includes(0)) fail(`PAX ${key} contains a NUL byte`, at);
  return what ? decodeName(raw, what, `PAX ${key}`, at) : utf8Lenient.decode(raw);
}

const XATTR_PREFIX = "SCHILY.xattr.";

// ---------------------------------------------------------------------------------------------
// The entry loop.

const TYPE_FLAGS: Record<number, TarEntryType> = {
  0x00: "file",
  0x30: "file", // '0'
  0x37: "file", // '7' contiguous
  0x31: "hardlink",
  0x32: "symlink",
  0x33: "char",
  0x34: "block",
  0x35: "dir",
  0x36: "fifo",
};

function describeFlag(flag: number): string {
  return flag >= 0x21 && flag <= 0x7e ? `'${String.fromCharCode(flag)}'` : `0x${flag.toString(16).padStart(2, "0")}`;
}

interface BodyState {
  remaining: number;
  live: boolean;
  taken: boolean;
}

async function* readEntries(source: ReadableStream<Uint8Array>, limits: Limits, release?: (piece: Uint8Array) => void): AsyncGenerator<TarEntryWithBody> {
  const input = new ByteSource(source.getReader(), release);
  const globals: PaxRecords = new Map();
  let finished = false;
  let failure: unknown = undefined;
  let index = 0;
  try {
    for (;;) {
      const next = await readHeader(input, globals, limits, index);
      if (next === null) break;
      const { entry, dataSize } = next;
      const state: BodyState = { remaining: entry.type === "file" ? entry.size : 0, live: true, taken: false };
      const place: Place = { offset: input.offset, index, path: entry.path };
      const body = (): AsyncIterable<Uint8Array> => {
        if (state.taken) throw new TarError(`tar: body of ${JSON.stringify(entry.path)} was already read`);
        if (!state.live) throw new TarError(`tar: body of ${JSON.stringify(entry.path)} requested after moving to the next entry`);
        state.taken = true;
        return bodyOf(input, state, place);
      };
      yield Object.assign(entry, { body });
      state.live = false;
      const rest = dataSize - (entry.type === "file" ? entry.size - state.remaining : 0);
      if (!(await input.skip(rest + padding(dataSize)))) fail("truncated archive: stream ended inside an entry's data", { ...place, offset: input.offset });
      index++;
    }
    finished = true;
    await input.drain();
  } catch (err) {
    failure = err;
    throw err;
  } finally {
    // Reached on errors and when the caller stops iterating early: the rest of the layer is unwanted.
    if (!finished) await input.cancel(failure ?? new TarError("tar: reader closed before the end of the archive"));
  }
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

async function* bodyOf(input: ByteSource, state: BodyState, at: Place): AsyncGenerator<Uint8Array> {
  while (state.remaining > 0) {
    const piece = await input.readSome(state.remaining);
    if (piece === null) fail("truncated archive: stream ended inside a file body", { ...at, offset: input.offset });
    state.remaining -= piece.byteLength;
    yield piece;
    if (!state.live && state.remaining > 0) {
      throw new TarError(`tar: body of ${JSON.stringify(at.path)} read after moving to the next entry`);
    }
  }
}

/** Reads a metadata entry's body whole (bounded by `limit`), then its padding. */
async function readSpecial(input: ByteSource, size: number, limit: number, what: string, at: Place): Promise<Uint8Array> {
  if (size > limit) fail(`${what} of ${size} bytes exceeds the limit of ${limit}`, at);
  const data = new Uint8Array(size);
  if ((await input.readInto(data)) < size || !(await input.skip(padding(size)))) {
    fail(`truncated archive: stream ended inside a ${what}`, { ...at, offset: input.offset });
  }
  return data;
}

/**
 * Reads headers up to and including the next real entry, absorbing PAX and GNU long-name headers.
 * Returns null at the end of the archive. `dataSize` is how many data bytes follow the header.
 */
async function readHeader(
  input: ByteSource,
  globals: PaxRecords,
  limits: Limits,
  index: number,
): Promise<{ entry: TarEntry; dataSize: number } | null> {
  let local: PaxRecords | null = null;
  let longName: Uint8Array | null = null;
  let longLink: Uint8Array | null = null;
  let pendingMeta = false;
  for (;;) {
    const at: Place = { offset: input.offset, index };
    const block = await input.readBlock();
    if (block === "partial") fail("truncated archive: stream ended inside a header", at);
    if (block === null) {
      if (pendingMeta) fail("truncated archive: stream ended after an extended header", at);
      return null; // many layers end without the zero blocks
    }
    if (isZeroBlock(block)) {
      if (pendingMeta) fail("extended header not followed by an entry", at);
      const second = await input.readBlock();
      if (second === null || (second !== "partial" && isZeroBlock(second))) return null;
      if (second === "partial") fail("truncated archive: stream ended inside a header", { ...at, offset: at.offset + BLOCK });
      fail("lone zero block followed by a header", at);
    }
    verifyChecksum(block, at);
    const flag = block[156]!;
    const size = numeric(block, 124, 12, "size", at);
    switch (flag) {
      case 0x78: // 'x': applies to the next entry; later records win
      case 0x67: {
        // 'g': applies to all later entries; an empty value removes the global record
        const records = parsePax(await readSpecial(input, size, limits.pax, "PAX extended header", at), at);
        if (flag === 0x78) {
          if (local === null) local = records;
          else for (const [k, v] of records) local.set(k, v);
          pendingMeta = true;
        } else {
          for (const [k, v] of records) {
            if (v.byteLength === 0) globals.delete(k);
            else globals.set(k, v.slice());
          }
        }
        continue;
      }
      case 0x4c: // 'L' GNU long name
      case 0x4b: {
        // 'K' GNU long link
        const what = flag === 0x4c ? "GNU long name" : "GNU long link name";
        const name = cString(await readSpecial(input, size, limits.longName, what, at));
        if (flag === 0x4c) longName = name;
        else longLink = name;
        pendingMeta = true;
        continue;
      }
    }
    return buildEntry(block, flag, size, mergePax(globals, local), longName, longLink, at);
  }
}

/** Local records override globals; an empty local value restores the header field. */
function mergePax(globals: PaxRecords, local: PaxRecords | null): PaxRecords {
  if (!local) return globals;
  if (globals.size === 0) return local;
  const merged = new Map(globals);
  for (const [k, v] of local) merged.set(k, v);
  return merged;
}

function buildEntry(
  block: Uint8Array,
  flag: number,
  headerSize: number,
  pax: PaxRecords,
  longName: Uint8Array | null,
  longLink: Uint8Array | null,
  at: Place,
): { entry: TarEntry; dataSize: number } {
  const format = headerFormat(block);
  // The header's own name is decoded only when nothing overrides it: writers truncate it when a
  // PAX or GNU long name holds the real one, possibly in the middle of a UTF-8 sequence.
  const path =
    longName !== null
      ? decodeName(longName, "name", "GNU long name", at)
      : (paxString(pax, "path", at, "name") ?? decodeName(ustarName(block, format), "name", "header", at));
  at.path = path;
  if (path === "") fail("entry has an empty name", at);

  let sparse = false;
  for (const key of pax.keys()) sparse ||= key.startsWith("GNU.sparse.");
  if (flag === 0x53 /* 'S' */ || sparse) {
    const real = paxString(pax, "GNU.sparse.name", at) ?? path;
    fail(`sparse files are not supported: ${JSON.stringify(real)}`, at);
  }
  if (flag === 0x44 /* 'D' */) fail("GNU dumpdir entries (type 'D', from incremental archives) are not supported", at);
  let type = TYPE_FLAGS[flag];
  if (type === undefined) fail(`unsupported entry type ${describeFlag(flag)}`, at);
  // Old (pre-POSIX) archives mark directories only by a trailing slash on a regular-file entry.
  const oldStyleDir = type === "file" && flag !== 0x37 && path.endsWith("/");
  if (oldStyleDir) type = "dir";

  const linkName =
    type !== "symlink" && type !== "hardlink"
      ? ""
      : longLink !== null
        ? decodeName(longLink, "link name", "GNU long link", at)
        : (paxString(pax, "linkpath", at, "link name") ?? decodeName(field(block, 157, 100), "link name", "header", at));
  if ((type === "symlink" || type === "hardlink") && linkName === "") fail(`${type} without a target`, at);

  const size = paxNumber(pax, "size", at)?.int ?? headerSize;
  const mtime = paxNumber(pax, "mtime", at) ?? { int: numeric(block, 136, 12, "mtime", at, true), nsec: 0 };
  const hasOwnerNames = format !== "v7";
  const isDevice = type === "char" || type === "block";
  const entry: TarEntry = {
    path,
    type,
    mode: numeric(block, 100, 8, "mode", at) & 0o7777,
    uid: paxNumber(pax, "uid", at)?.int ?? numeric(block, 108, 8, "uid", at),
    gid: paxNumber(pax, "gid", at)?.int ?? numeric(block, 116, 8, "gid", at),
    uname: paxString(pax, "uname", at) ?? (hasOwnerNames ? utf8Lenient.decode(field(block, 265, 32)) : ""),
    gname: paxString(pax, "gname", at) ?? (hasOwnerNames ? utf8Lenient.decode(field(block, 297, 32)) : ""),
    size: type === "file" ? size : 0,
    mtime: mtime.int,
    mtimeNsec: mtime.nsec,
    linkName,
    devMajor: isDevice && hasOwnerNames ? numeric(block, 329, 8, "devmajor", at) : 0,
    devMinor: isDevice && hasOwnerNames ? numeric(block, 337, 8, "devminor", at) : 0,
    xattrs: new Map(),
  };
  for (const [key, value] of pax) {
    if (key.startsWith(XATTR_PREFIX) && key.length > XATTR_PREFIX.length) entry.xattrs.set(key.slice(XATTR_PREFIX.length), value.slice());
  }
  // Like Go's archive/tar, links, devices, fifos and directories carry no data whatever their size
  // field says; a slash-marked old directory was written as a file, so its data (if any) is skipped.
  const dataSize = type === "file" || oldStyleDir ? size : 0;
  return { entry, dataSize };
}
