// Streaming tar parser for OCI layers: ustar, v7, GNU (long names, base-256 numbers) and PAX
// (local and global extended headers). It is fed pieces and keeps none of them, only copies of
// headers and metadata entries, so memory stays flat however large the layer or its files are.
// Entry semantics follow Go's archive/tar where tar implementations disagree, because that is what
// containerd and Docker use to unpack the same layers.

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

/**
 * Where the parser hands what it reads. A call that returns a promise pauses the parser until it
 * settles; the bytes given stay valid until then, and not after.
 */
export interface TarSink {
  /** The next entry, PAX and GNU long names resolved; a file's body follows in `body` calls. */
  entry(entry: TarEntry): Promise<void> | undefined;
  /** The next bytes of the current file's body, in whatever pieces the input arrived. */
  body(bytes: Uint8Array): Promise<void> | undefined;
}

export class TarError extends Error {
  override name = "TarError";
}

export interface TarParserOptions {
  /** Largest accepted PAX extended header body (default 1 MiB). */
  maxPaxHeaderBytes?: number;
  /** Largest accepted GNU long name / long link body (default 64 KiB). */
  maxLongNameBytes?: number;
}

const BLOCK = 512;
const utf8 = new TextDecoder("utf-8", { fatal: true });
const utf8Lenient = new TextDecoder("utf-8");

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

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

const EMPTY = new Uint8Array(0);

/** What the bytes at the parser's position are. */
type Part = "header" | "second zero block" | "metadata" | "body" | "skip" | "end";

/**
 * A tar parser fed whatever pieces the source delivers: it works through each piece synchronously,
 * and waits only where its sink asks it to. Bodies go to the sink as views of the pieces, and
 * headers are read in place; a header split between pieces, and a metadata entry's data (PAX, GNU
 * long names, kept until its entry), are copied.
 */
export class TarParser {
  readonly #sink: TarSink;
  readonly #maxPax: number;
  readonly #maxLongName: number;
  #part: Part = "header";
  /** A block split between pieces, gathered. */
  readonly #block = new Uint8Array(BLOCK);
  #blockFill = 0;
  /** Where the block being read begins in the archive. */
  #blockAt = 0;
  /** Bytes left of the body or of what is skipped; the padding after a body. */
  #left = 0;
  #padding = 0;
  /** What is being skipped, for messages. */
  #skipping = "";
  /** A metadata entry's data, gathered: its type flag, where its header began, and how much is here. */
  #metadata: Uint8Array = EMPTY;
  #metadataFill = 0;
  #metadataFlag = 0;
  #metadataAt: Place = { offset: 0, index: 0 };
  readonly #globals: PaxRecords = new Map();
  #local: PaxRecords | null = null;
  #longName: Uint8Array | null = null;
  #longLink: Uint8Array | null = null;
  /** An extended header or long name waits for its entry. */
  #pendingMeta = false;
  /** The next entry's index. */
  #index = 0;
  /** The entry whose data is being read, for messages. */
  #entryAt: Place = { offset: 0, index: 0 };
  /** The piece being parsed, the position in it, and the archive offset it begins at. */
  #piece: Uint8Array = EMPTY;
  #pos = 0;
  #base = 0;

  constructor(sink: TarSink, options: TarParserOptions = {}) {
    this.#sink = sink;
    this.#maxPax = options.maxPaxHeaderBytes ?? 1024 * 1024;
    this.#maxLongName = options.maxLongNameBytes ?? 64 * 1024;
  }

  /** The end-of-archive marker is read: whatever follows is ignored. */
  get finished(): boolean {
    return this.#part === "end";
  }

  /**
   * Parses `piece`. A promise when the sink paused the parser: it settles once the whole piece is
   * parsed, and the piece must stay as it is until then. After an error (a TarError, or one the
   * sink threw or rejected with) the parser is not to be used again.
   */
  push(piece: Uint8Array): Promise<void> | undefined {
    this.#piece = piece;
    this.#pos = 0;
    const paused = this.#run();
    return paused && this.#resume(paused);
  }

  /** The source ended: an error unless between entries, or after the end marker. */
  end(): void {
    const here: Place = { ...this.#entryAt, offset: this.#base + this.#pos };
    switch (this.#part) {
      case "header":
        if (this.#blockFill > 0) fail("truncated archive: stream ended inside a header", { offset: this.#blockAt, index: this.#index });
        // Many layers end without the end marker.
        if (this.#pendingMeta) fail("truncated archive: stream ended after an extended header", { offset: here.offset, index: this.#index });
        return;
      case "second zero block":
        if (this.#blockFill > 0) fail("truncated archive: stream ended inside a header", { offset: this.#blockAt, index: this.#index });
        return;
      case "body":
        return fail("truncated archive: stream ended inside a file body", here);
      case "metadata":
        return fail(`truncated archive: stream ended inside a ${metadataName(this.#metadataFlag)}`, { ...this.#metadataAt, offset: here.offset });
      case "skip":
        return fail(`truncated archive: stream ended inside ${this.#skipping}`, here);
      case "end":
        return;
    }
  }

  async #resume(paused: Promise<void>): Promise<void> {
    for (let waiting: Promise<void> | undefined = paused; waiting; waiting = this.#run()) await waiting;
  }

  /** Parses on from the position until the piece is used up, or the sink pauses. */
  #run(): Promise<void> | undefined {
    const piece = this.#piece;
    while (this.#pos < piece.byteLength) {
      let paused: Promise<void> | undefined;
      switch (this.#part) {
        case "header":
          paused = this.#header();
          break;
        case "body": {
          const n = Math.min(this.#left, piece.byteLength - this.#pos);
          const bytes = piece.subarray(this.#pos, this.#pos + n);
          this.#pos += n;
          if ((this.#left -= n) === 0) this.#skip(this.#padding, "an entry's data");
          paused = this.#sink.body(bytes);
          break;
        }
        case "skip": {
          const n = Math.min(this.#left, piece.byteLength - this.#pos);
          this.#pos += n;
          if ((this.#left -= n) === 0) this.#part = "header";
          break;
        }
        case "metadata": {
          const n = Math.min(this.#metadata.byteLength - this.#metadataFill, piece.byteLength - this.#pos);
          this.#metadata.set(piece.subarray(this.#pos, this.#pos + n), this.#metadataFill);
          this.#metadataFill += n;
          this.#pos += n;
          if (this.#metadataFill === this.#metadata.byteLength) this.#endMetadata();
          break;
        }
        case "second zero block": {
          const block = this.#takeBlock();
          if (block === null) break;
          if (!isZeroBlock(block)) fail("lone zero block followed by a header", { offset: this.#blockAt - BLOCK, index: this.#index });
          this.#part = "end";
          break;
        }
        case "end":
          this.#pos = piece.byteLength;
          break;
      }
      if (paused) return paused;
    }
    this.#base += piece.byteLength;
    this.#piece = EMPTY;
    this.#pos = 0;
    return undefined;
  }

  /** The next block: a view of the piece when it holds all of it, else gathered; null until whole. */
  #takeBlock(): Uint8Array | null {
    const piece = this.#piece;
    if (this.#blockFill === 0) {
      this.#blockAt = this.#base + this.#pos;
      if (piece.byteLength - this.#pos >= BLOCK) {
        this.#pos += BLOCK;
        return piece.subarray(this.#pos - BLOCK, this.#pos);
      }
    }
    const n = Math.min(BLOCK - this.#blockFill, piece.byteLength - this.#pos);
    this.#block.set(piece.subarray(this.#pos, this.#pos + n), this.#blockFill);
    this.#blockFill += n;
    this.#pos += n;
    if (this.#blockFill < BLOCK) return null;
    this.#blockFill = 0;
    return this.#block;
  }

  /** A header: an entry for the sink, or a metadata entry for the next. */
  #header(): Promise<void> | undefined {
    const block = this.#takeBlock();
    if (block === null) return undefined;
    const at: Place = { offset: this.#blockAt, index: this.#index };
    if (isZeroBlock(block)) {
      if (this.#pendingMeta) fail("extended header not followed by an entry", at);
      this.#part = "second zero block";
      return undefined;
    }
    verifyChecksum(block, at);
    const flag = block[156]!;
    const size = numeric(block, 124, 12, "size", at);
    if (flag === 0x78 || flag === 0x67 || flag === 0x4c || flag === 0x4b) {
      this.#beginMetadata(flag, size, at);
      return undefined;
    }
    const { entry, dataSize } = buildEntry(block, flag, size, mergePax(this.#globals, this.#local), this.#longName, this.#longLink, at);
    this.#local = this.#longName = this.#longLink = null;
    this.#pendingMeta = false;
    this.#entryAt = { offset: 0, index: this.#index++, path: entry.path };
    // Like Go's archive/tar, only a regular file's data is its body (buildEntry).
    if (entry.type === "file" && entry.size > 0) {
      this.#part = "body";
      this.#left = entry.size;
      this.#padding = padding(dataSize);
    } else {
      this.#skip(dataSize + padding(dataSize), "an entry's data");
    }
    return this.#sink.entry(entry);
  }

  #skip(n: number, what: string): void {
    this.#part = n === 0 ? "header" : "skip";
    this.#left = n;
    this.#skipping = what;
  }

  /** A PAX extended header ('x' for the next entry, 'g' for all later ones) or a GNU long name ('L') or link ('K'). */
  #beginMetadata(flag: number, size: number, at: Place): void {
    const limit = flag === 0x78 || flag === 0x67 ? this.#maxPax : this.#maxLongName;
    if (size > limit) fail(`${metadataName(flag)} of ${size} bytes exceeds the limit of ${limit}`, at);
    this.#part = "metadata";
    this.#metadata = new Uint8Array(size);
    this.#metadataFill = 0;
    this.#metadataFlag = flag;
    this.#metadataAt = at;
    if (size === 0) this.#endMetadata();
  }

  #endMetadata(): void {
    const [flag, data, at] = [this.#metadataFlag, this.#metadata, this.#metadataAt];
    this.#metadata = EMPTY;
    this.#entryAt = { offset: 0, index: this.#index };
    this.#skip(padding(data.byteLength), `a ${metadataName(flag)}`);
    switch (flag) {
      case 0x78: {
        // Later records win.
        const records = parsePax(data, at);
        if (this.#local === null) this.#local = records;
        else for (const [k, v] of records) this.#local.set(k, v);
        this.#pendingMeta = true;
        return;
      }
      case 0x67:
        // An empty value removes the global record.
        for (const [k, v] of parsePax(data, at)) {
          if (v.byteLength === 0) this.#globals.delete(k);
          else this.#globals.set(k, v);
        }
        return;
      case 0x4c:
        this.#longName = cString(data);
        this.#pendingMeta = true;
        return;
      case 0x4b:
        this.#longLink = cString(data);
        this.#pendingMeta = true;
        return;
    }
  }
}

function metadataName(flag: number): string {
  return flag === 0x4c ? "GNU long name" : flag === 0x4b ? "GNU long link name" : "PAX extended header";
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
