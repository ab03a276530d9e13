// `skiff inspect`: what an image (or layer) bootstrap holds — a summary and an `ls -l`-like
// listing, or everything as one JSON document for scripts and tests.
import { CHUNK_CODECS, codecFromId } from "../format/chunk-codec.ts";
import { parsePlatform } from "../convert/image-source.ts";
import { parseChunkSize } from "../format/params.ts";
import type { Bootstrap, Inode } from "../format/decode.ts";
import { FORMAT_VERSION } from "../format/layout.ts";
import { toHex } from "../hash/hasher.ts";
import { integerFlag, parseFlags, UsageError } from "./args.ts";
import { isProxyUrl, openConverted, type ProxyRequest } from "./converted.ts";
import { formatBytes } from "./progress.ts";

export const inspectHelp = `Usage: skiff inspect DIR|BOOTSTRAP|PROXY-URL [options]

Shows what a bootstrap holds: a summary (kind, platform, chunk size, codec, counts, the data blobs
and the layers they come from) and a listing of the file tree like 'ls -l'. DIR is a directory
written by 'skiff convert'; a bootstrap file can be given directly. PROXY-URL names an image on a
skiff proxy, http://HOST:PORT/NAME:TAG or http://HOST:PORT/NAME@DIGEST: its bootstrap is fetched
from the proxy's lazy API (converted there on first request), checked against its digest and shown.

Options:
  --json              print one JSON document with the header and every entry (chunks, xattrs, …)
  --path PATH         only this entry and, for a directory, everything below it
  -h, --help          show this help

With a PROXY-URL only:
  --platform OS/ARCH  platform to pick from a multi-platform image (default: the proxy's --platform)
  --chunk-size SIZE   chunk size, a power of two from 64k to 16m (default 1m)
  --codec CODEC       per-chunk codec: ${CHUNK_CODECS.join(" or ")} (default none)
  --timeout SECONDS   how long to wait while the proxy converts the image (default 300)`;

export async function inspectCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      json: { type: "boolean" },
      path: { type: "string" },
      platform: { type: "string" },
      "chunk-size": { type: "string" },
      codec: { type: "string" },
      timeout: { type: "string" },
    },
    true,
  );
  if (values.help) {
    console.log(inspectHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected one DIR, bootstrap file or proxy URL (see --help)");
  const proxy = proxyRequest(values, isProxyUrl(positionals[0]!));
  try {
    const { bootstrap } = await openConverted(positionals[0]!, { proxy });
    let start = { path: "/", inode: 0 };
    if (values.path !== undefined) {
      const inode = bootstrap.lookup(values.path);
      if (inode === null) throw new Error(`no entry ${JSON.stringify(values.path)} in the image`);
      start = { path: normalisePath(values.path), inode };
    }
    const entries = bootstrap.walk(start);
    if (values.json) console.log(JSON.stringify({ ...header(bootstrap), entries: [...entries].map((e) => jsonEntry(bootstrap, e)) }, null, 2));
    else printText(bootstrap, entries, values.path === undefined);
    return 0;
  } catch (err) {
    process.stderr.write(`skiff inspect: ${(err as Error).message}\n`);
    return 1;
  }
}

interface Entry {
  path: string;
  inode: number;
}

/** The proxy-only flags, checked here so a mistake is a usage error before anything is fetched. */
function proxyRequest(values: { platform?: string; "chunk-size"?: string; codec?: string; timeout?: string }, isUrl: boolean): ProxyRequest {
  const given = (["platform", "chunk-size", "codec", "timeout"] as const).filter((k) => values[k] !== undefined);
  if (!isUrl) {
    if (given.length) throw new UsageError(`--${given[0]} applies only to a proxy URL (http://HOST:PORT/NAME:TAG)`);
    return {};
  }
  if (values.platform !== undefined) {
    try {
      parsePlatform(values.platform);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (values["chunk-size"] !== undefined) {
    try {
      parseChunkSize(values["chunk-size"]);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  if (values.codec !== undefined && !CHUNK_CODECS.some((c) => c === values.codec)) {
    throw new UsageError(`unknown codec ${JSON.stringify(values.codec)} (${CHUNK_CODECS.join(", ")})`);
  }
  return {
    platform: values.platform,
    chunkSize: values["chunk-size"]?.trim(),
    codec: values.codec,
    timeoutMs: integerFlag(values.timeout, "timeout", 300, 1, 86_400) * 1000,
  };
}

function normalisePath(p: string): string {
  const parts = p.split("/").filter((x) => x !== "" && x !== ".");
  return `/${parts.join("/")}`;
}

function codecName(id: number): string {
  return codecFromId(id) ?? `unknown (${id})`;
}

function header(b: Bootstrap) {
  return {
    kind: b.kind,
    formatVersion: FORMAT_VERSION,
    platform: b.platform,
    chunkSize: b.chunkSize,
    codec: codecName(b.codec),
    inodes: b.inodeCount,
    chunks: b.chunkCount,
    blobs: Array.from({ length: b.blobCount }, (_, i) => {
      const blob = b.blob(i);
      return { layerDigest: blob.layerDigest, dataDigest: `sha256:${toHex(blob.dataDigest)}`, storedSize: blob.storedSize };
    }),
    bootstrapSize: b.bytes.byteLength,
  };
}

const isDevice = (ino: Inode) => ino.type === "char" || ino.type === "block";

function jsonEntry(b: Bootstrap, e: Entry) {
  const ino = b.inode(e.inode);
  const out: Record<string, unknown> = {
    path: e.path,
    type: ino.type,
    mode: `0o${(ino.mode & 0o7777).toString(8)}`,
    uid: ino.uid,
    gid: ino.gid,
    nlink: ino.nlink,
    size: ino.size,
    mtime: ino.mtime,
    mtimeNsec: ino.mtimeNsec,
  };
  if (ino.type === "symlink" || ino.type === "hardlink-ref") out.target = b.readlink(e.inode);
  if (isDevice(ino)) {
    out.devMajor = ino.devMajor;
    out.devMinor = ino.devMinor;
  }
  const xattrs = b.xattrs(e.inode);
  if (xattrs.size) out.xattrs = Object.fromEntries([...xattrs].map(([k, v]) => [k, Buffer.from(v).toString("base64")]));
  if (ino.type === "file") {
    out.chunks = b.chunks(e.inode).map((c, k) => ({
      digest: toHex(c.digest),
      blob: c.blob,
      offset: k * b.chunkSize,
      storedOffset: c.storedOffset,
      storedSize: c.storedSize,
      size: c.size,
      compressed: c.compressed,
    }));
  }
  return out;
}

function printText(b: Bootstrap, entries: Iterable<Entry>, wholeTree: boolean): void {
  const counts = { dir: 0, file: 0, symlink: 0, device: 0, fifo: 0, other: 0 };
  let fileBytes = 0;
  for (let i = 0; i < b.inodeCount; i++) {
    const ino = b.inode(i);
    if (ino.type === "dir") counts.dir++;
    else if (ino.type === "file") {
      counts.file++;
      fileBytes += ino.size;
    } else if (ino.type === "symlink") counts.symlink++;
    else if (isDevice(ino)) counts.device++;
    else if (ino.type === "fifo") counts.fifo++;
    else counts.other++;
  }
  const h = header(b);
  const lines = [
    `kind        ${h.kind} bootstrap, format version ${h.formatVersion}`,
    ...(h.platform ? [`platform    ${h.platform}`] : []),
    `chunk size  ${formatBytes(h.chunkSize)}`,
    `codec       ${h.codec}`,
    `inodes      ${h.inodes}: ${counts.dir} directories, ${counts.file} files, ${counts.symlink} symlinks, ${counts.device} devices, ${counts.fifo} fifos` +
      (counts.other ? `, ${counts.other} layer-only (whiteouts, hardlink references)` : ""),
    `file bytes  ${fileBytes} (${formatBytes(fileBytes)})`,
    `chunks      ${h.chunks}`,
    `blobs       ${h.blobs.length}`,
    ...h.blobs.map((blob, i) => `  ${String(i).padStart(3)}  ${blob.layerDigest}  ${formatBytes(blob.storedSize)} stored  data ${blob.dataDigest}`),
    `bootstrap   ${h.bootstrapSize} bytes (${formatBytes(h.bootstrapSize)})`,
    "",
  ];
  if (!wholeTree) lines.pop();
  console.log(lines.join("\n"));

  const rows = [...entries].map((e) => listingRow(b, e));
  const width = (k: number) => Math.max(...rows.map((r) => r[k]!.length));
  const w = [1, 2, 3, 4].map(width);
  for (const r of rows) {
    const [mode, nlink, uid, gid, size, time, name] = r as [string, string, string, string, string, string, string];
    console.log(`${mode} ${nlink.padStart(w[0]!)} ${uid.padEnd(w[1]!)} ${gid.padEnd(w[2]!)} ${size.padStart(w[3]!)} ${time} ${name}`);
  }
}

function listingRow(b: Bootstrap, e: Entry): string[] {
  const ino = b.inode(e.inode);
  const size = isDevice(ino) ? `${ino.devMajor}, ${ino.devMinor}` : String(ino.size);
  const target = ino.type === "symlink" ? ` -> ${b.readlink(e.inode)}` : ino.type === "hardlink-ref" ? ` link to /${b.readlink(e.inode)}` : "";
  return [modeString(ino), String(ino.nlink), String(ino.uid), String(ino.gid), size, formatTime(ino.mtime), `${e.path}${target}`];
}

const TYPE_CHAR: Record<Inode["type"], string> = { file: "-", dir: "d", symlink: "l", char: "c", block: "b", fifo: "p", whiteout: "w", "hardlink-ref": "h" };

/** `drwxr-sr-x`, `-rwsr-xr-x`, `drwxrwxrwt`: as ls(1) prints permission and special bits. */
export function modeString(ino: Pick<Inode, "type" | "mode">): string {
  const m = ino.mode;
  const triple = (shift: number, special: boolean, letter: string) => {
    const r = m & (4 << shift) ? "r" : "-";
    const w = m & (2 << shift) ? "w" : "-";
    const x = m & (1 << shift);
    const xs = special ? (x ? letter : letter.toUpperCase()) : x ? "x" : "-";
    return r + w + xs;
  };
  return TYPE_CHAR[ino.type] + triple(6, (m & 0o4000) !== 0, "s") + triple(3, (m & 0o2000) !== 0, "s") + triple(0, (m & 0o1000) !== 0, "t");
}

function formatTime(seconds: number): string {
  const d = new Date(seconds * 1000);
  if (Number.isNaN(d.getTime())) return String(seconds).padStart(16);
  return d.toISOString().slice(0, 16).replace("T", " ");
}
