// A malicious skiff proxy for tests: it answers what `skiff mount` asks (the image's bootstrap, then
// Range GETs of a layer's data blob) from a small image built with the project's own encoder, and a
// test swaps in a crafted bootstrap or misbehaving data answers. Loopback only.
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { encodeChunk, type ChunkCodec } from "../../src/format/codec.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { encodeBootstrap } from "../../src/format/encode.ts";
import * as L from "../../src/format/layout.ts";
import { baseNode, newDir, type ChunkRecord, type FsNode } from "../../src/format/model.ts";

export const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest();
export const digestOf = (b: Uint8Array) => `sha256:${sha256(b).toString("hex")}`;

export interface CraftedImage {
  bootstrap: Uint8Array;
  /** The one layer's data blob. */
  blob: Uint8Array;
  layerDigest: string;
  /** `Skiff-Params` of the conversion, e.g. `v1-c16-deflate-raw`. */
  params: string;
}

/**
 * An image bootstrap of `files` (path → bytes) in one layer: files cut into chunks of 2^shift bytes,
 * each distinct chunk stored once, compressed when that is smaller, as the converter does.
 * `decorate` may change the tree's attributes before it is encoded.
 */
export function craftImage(files: Record<string, Uint8Array>, shift = 16, codec: ChunkCodec = "deflate-raw", decorate?: (root: FsNode) => void): CraftedImage {
  const root = newDir();
  const parts: Uint8Array[] = [];
  const chunks: ChunkRecord[] = [];
  const known = new Map<string, number>();
  let stored = 0;
  let uncompressed = 0;
  for (const [path, data] of Object.entries(files)) {
    const names = path.split("/").filter(Boolean);
    let dir = root;
    for (const name of names.slice(0, -1)) {
      if (!dir.children!.has(name)) dir.children!.set(name, newDir());
      dir = dir.children!.get(name)!;
    }
    const file: FsNode = { ...baseNode("file", 0o644), size: data.length };
    for (let at = 0; at < data.length; at += 2 ** shift) {
      const piece = data.subarray(at, at + 2 ** shift);
      const hex = sha256(piece).toString("hex");
      let index = known.get(hex);
      if (index === undefined) {
        const encoded = encodeChunk(codec, piece);
        const compressed = encoded.length < piece.length;
        const bytes = compressed ? encoded : piece;
        index = chunks.length;
        chunks.push({ digest: sha256(piece), blob: 0, compressed, storedOffset: stored, storedSize: bytes.length, size: piece.length, uncompressedOffset: uncompressed });
        known.set(hex, index);
        parts.push(bytes);
        stored += bytes.length;
        uncompressed += piece.length;
      }
      file.chunks.push(index);
    }
    dir.children!.set(names.at(-1)!, file);
  }
  decorate?.(root);
  const blob = Buffer.concat(parts);
  const layerDigest = digestOf(Buffer.from("malicious-proxy layer"));
  const bootstrap = encodeBootstrap({
    kind: "image",
    codec: codec === "none" ? 0 : 1,
    chunkShift: shift,
    platform: "linux/amd64",
    blobs: [{ dataDigest: sha256(blob), storedSize: blob.length, layerDigest }],
    chunks,
    root,
  });
  return { bootstrap, blob, layerDigest, params: `v1-c${shift}-${codec}` };
}

/** Where the records of a bootstrap are, to overwrite one field at the offset docs/format.md gives. */
export interface Fields {
  view: DataView;
  at: L.SectionOffsets;
  counts: L.Counts;
  /** The inode number at `path`. */
  ino(path: string): number;
  /** Byte offset of the inode record at `path`. */
  inode(path: string): number;
  /** Byte offset of the directory entry naming `path`. */
  dirent(path: string): number;
  /** Byte offset of the chunk record of chunk `k` of the file at `path`. */
  chunkOf(path: string, k?: number): number;
  /** Byte offset in the string table of the first occurrence of `text`. */
  string(text: string): number;
}

/** A copy of `bootstrap` changed by `edit`. */
export function tamper(bootstrap: Uint8Array, edit: (f: Fields, bytes: Uint8Array) => Uint8Array | void): Uint8Array {
  const bytes = new Uint8Array(bootstrap);
  const b = Bootstrap.decode(bootstrap);
  const view = new DataView(bytes.buffer);
  const counts = L.readCounts(view);
  const at = L.sectionOffsets(counts);
  const inodeOf = (path: string) => {
    const i = b.lookup(path);
    if (i === null) throw new Error(`no ${path} in the bootstrap`);
    return i;
  };
  const fields: Fields = {
    view,
    at,
    counts,
    ino: inodeOf,
    inode: (path) => at.inodes + inodeOf(path) * L.INODE_RECORD_SIZE,
    dirent: (path) => {
      const parent = path.slice(0, path.lastIndexOf("/")) || "/";
      const name = path.slice(path.lastIndexOf("/") + 1);
      const k = b.readdir(inodeOf(parent)).findIndex((e) => e.name === name);
      const first = view.getUint32(at.inodes + inodeOf(parent) * L.INODE_RECORD_SIZE + 40, true);
      return at.dirents + (first + k) * L.DIRENT_RECORD_SIZE;
    },
    chunkOf: (path, k = 0) => at.chunks + b.chunkIndexes(inodeOf(path))[k]! * L.CHUNK_RECORD_SIZE,
    string: (text) => {
      const offset = Buffer.from(bytes.subarray(at.strings)).indexOf(text);
      if (offset < 0) throw new Error(`${text} is not in the string table`);
      return at.strings + offset;
    },
  };
  return edit(fields, bytes) ?? bytes;
}

/** How the proxy answers one Range GET of the data blob, asked as bytes start..end inclusive. */
export type DataAnswer = (res: ServerResponse, start: number, end: number, blob: Uint8Array) => void;

export const honest: DataAnswer = (res, start, end, blob) => {
  if (start >= blob.length || end < start) return void res.writeHead(416, { "content-range": `bytes */${blob.length}` }).end();
  const last = Math.min(end, blob.length - 1);
  res.writeHead(206, { "content-range": `bytes ${start}-${last}/${blob.length}`, "content-length": last - start + 1 });
  res.end(blob.subarray(start, last + 1));
};

export class MaliciousProxy {
  /** What the bootstrap route serves, and the headers it sends with it (`undefined`: the honest value). */
  bootstrap: Uint8Array;
  digestHeader: string | undefined;
  params: string;
  /** Replaces the whole bootstrap answer when set (huge or endless bodies). */
  bootstrapAnswer: ((res: ServerResponse) => void) | undefined;
  blob: Uint8Array;
  data: DataAnswer = honest;
  /** Every request's URL, in arrival order. */
  readonly requests: string[] = [];
  readonly #server: Server;

  private constructor(server: Server, image: CraftedImage) {
    this.#server = server;
    this.bootstrap = image.bootstrap;
    this.blob = image.blob;
    this.params = image.params;
  }

  static async start(image: CraftedImage): Promise<MaliciousProxy> {
    let proxy: MaliciousProxy | undefined;
    const server = createServer((req, res) => proxy!.#answer(req, res));
    proxy = new MaliciousProxy(server, image);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return proxy;
  }

  /** The image URL for `skiff mount`. */
  get imageUrl(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/e2e/evil:v1`;
  }

  /** Serves `image` honestly again. */
  reset(image: CraftedImage): void {
    this.requests.length = 0;
    Object.assign(this, { bootstrap: image.bootstrap, blob: image.blob, params: image.params, digestHeader: undefined, bootstrapAnswer: undefined, data: honest });
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((r) => this.#server.close(r));
  }

  #answer(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? "";
    this.requests.push(url);
    res.on("error", () => {}); // an agent that hangs up on a bad answer is what some tests want
    if (url.startsWith("/v2/e2e/evil/_skiff/bootstrap/")) {
      if (this.bootstrapAnswer) return this.bootstrapAnswer(res);
      res.writeHead(200, {
        "docker-content-digest": this.digestHeader ?? digestOf(this.bootstrap),
        "skiff-manifest-digest": digestOf(Buffer.from("manifest")),
        "skiff-params": this.params,
        "content-length": this.bootstrap.length,
      });
      return void res.end(this.bootstrap);
    }
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
    if (url.startsWith("/v2/e2e/evil/_skiff/layers/") && url.endsWith("/data") && range) return this.data(res, Number(range[1]), Number(range[2]), this.blob);
    res.writeHead(404).end();
  }
}
