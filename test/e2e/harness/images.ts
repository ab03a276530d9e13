// Small OCI images built in test code, as OCI image layout directories (oci-layout, index.json,
// blobs/sha256/…), with deterministic pseudo-random content; a streamed ≥ 1 GiB layer; image indexes;
// and pushing a layout to a registry with skopeo.
import { createCipheriv, createHash } from "node:crypto";
import { mkdirSync, readFileSync, existsSync, writeFileSync, renameSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { skopeoCopy } from "./skopeo.ts";

export const MT = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string; variant?: string };
  annotations?: Record<string, string>;
}

export const sha256 = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** Deterministic pseudo-random byte source (AES-128-CTR keystream keyed by the seed). */
export class Prng {
  private readonly cipher;
  private static readonly ZERO = Buffer.alloc(1 << 20);

  constructor(seed: string) {
    const k = createHash("sha256").update(`skiff-e2e:${seed}`).digest();
    this.cipher = createCipheriv("aes-128-ctr", k.subarray(0, 16), k.subarray(16, 32));
  }

  bytes(n: number): Buffer {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const take = Math.min(left, Prng.ZERO.length);
      parts.push(this.cipher.update(Prng.ZERO.subarray(0, take)));
      left -= take;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return this.bytes(4).readUInt32BE(0) % n;
  }
}

// ---- tar (ustar) ----

export interface TarEntry {
  name: string;
  type: "file" | "dir" | "symlink";
  /** A symlink's target. */
  linkname?: string;
  data?: Uint8Array;
  /** Size for a header written without data (streamed entries). */
  size?: number;
  mode?: number;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

/** One 512-byte ustar header. Names up to 100 bytes (plus a 155-byte prefix split at a '/'). */
export function tarHeader(entry: TarEntry): Buffer {
  const h = Buffer.alloc(512);
  let name = entry.type === "dir" && !entry.name.endsWith("/") ? `${entry.name}/` : entry.name;
  let prefix = "";
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", name.length - 2);
    prefix = name.slice(0, cut);
    name = name.slice(cut + 1);
    if (Buffer.byteLength(name) > 100 || Buffer.byteLength(prefix) > 155) throw new Error(`tar name too long: ${entry.name}`);
  }
  const size = entry.type === "file" ? (entry.size ?? entry.data?.length ?? 0) : 0;
  h.write(name, 0, 100, "utf8");
  h.write(octal(entry.mode ?? (entry.type === "file" ? 0o644 : entry.type === "dir" ? 0o755 : 0o777), 8), 100, "ascii");
  h.write(octal(0, 8), 108, "ascii"); // uid
  h.write(octal(0, 8), 116, "ascii"); // gid
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(1_700_000_000, 12), 136, "ascii"); // mtime, fixed for determinism
  h.write("        ", 148, "ascii"); // checksum placeholder
  h.write(entry.type === "dir" ? "5" : entry.type === "symlink" ? "2" : "0", 156, "ascii");
  if (entry.linkname !== undefined) h.write(entry.linkname, 157, 100, "utf8");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  h.write("root", 265, "ascii");
  h.write("root", 297, "ascii");
  h.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return h;
}

const padding = (size: number) => Buffer.alloc((512 - (size % 512)) % 512);

/** A whole tar archive in memory (for small layers). */
export function tarArchive(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    parts.push(tarHeader(e));
    if (e.type === "file" && e.data !== undefined) {
      parts.push(Buffer.from(e.data), padding(e.data.length));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

// ---- OCI layout ----

export class OciLayout {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
    if (!existsSync(join(dir, "oci-layout"))) {
      writeFileSync(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    }
    if (!existsSync(join(dir, "index.json"))) {
      writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: [] }));
    }
  }

  blobPath(digest: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (m === null) throw new Error(`not a sha256 digest: ${digest}`);
    return join(this.dir, "blobs", "sha256", m[1]!);
  }

  writeBlob(bytes: Uint8Array, mediaType: string): Descriptor {
    const digest = sha256(bytes);
    const path = this.blobPath(digest);
    if (!existsSync(path)) writeFileSync(path, bytes);
    return { mediaType, digest, size: bytes.length };
  }

  readBlob(digest: string): Buffer {
    return readFileSync(this.blobPath(digest));
  }

  blobSize(digest: string): number {
    return statSync(this.blobPath(digest)).size;
  }

  /** Point tag `ref` (annotation org.opencontainers.image.ref.name) at a manifest or index. */
  tag(ref: string, desc: Descriptor): void {
    const indexPath = join(this.dir, "index.json");
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as { manifests: Descriptor[] };
    index.manifests = index.manifests.filter((m) => m.annotations?.["org.opencontainers.image.ref.name"] !== ref);
    index.manifests.push({
      mediaType: desc.mediaType,
      digest: desc.digest,
      size: desc.size,
      annotations: { "org.opencontainers.image.ref.name": ref },
    });
    writeFileSync(indexPath, JSON.stringify(index));
  }
}

export interface LayerInfo extends Descriptor {
  diffId: string;
}

export interface ImageInfo {
  layout: OciLayout;
  tag: string;
  manifest: Descriptor;
  manifestBytes: Buffer;
  config: Descriptor;
  layers: LayerInfo[];
  platform: { architecture: string; os: string };
}

export interface IndexInfo {
  layout: OciLayout;
  tag: string;
  index: Descriptor;
  indexBytes: Buffer;
  images: ImageInfo[];
}

export interface ImageSpec {
  tag: string;
  seed: string;
  layers?: number;
  filesPerLayer?: number;
  /** Bytes per generated file (each file gets a slightly different size). */
  fileSize?: number;
  platform?: { architecture: string; os: string };
  /** Skip tagging in index.json (for images that are only reachable through an index). */
  untagged?: boolean;
}

function configBlob(platform: { architecture: string; os: string }, diffIds: string[], seed: string): Buffer {
  const config = {
    created: "2024-01-01T00:00:00Z",
    architecture: platform.architecture,
    os: platform.os,
    config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"], Labels: { "skiff.e2e.seed": seed } },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: "2024-01-01T00:00:00Z", created_by: `skiff-e2e layer ${i}` })),
  };
  return Buffer.from(JSON.stringify(config));
}

function writeManifest(
  layout: OciLayout,
  config: Descriptor,
  layers: Descriptor[],
): { desc: Descriptor; bytes: Buffer } {
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2));
  return { desc: layout.writeBlob(bytes, MT.manifest), bytes };
}

/** The platform of this machine's binaries, as an image config names it. */
export function hostPlatform(): { architecture: string; os: string } {
  const arch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
  return { architecture: arch[process.arch] ?? process.arch, os: "linux" };
}

/** What a runtime reads from an image config to start a container. */
export interface RunConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
}

/**
 * Tag `tag` as an image of layers already in the layout (each with its diff id), whose config says
 * how to run it; for the host's platform unless another is given.
 */
export function writeRunnableImage(
  layout: OciLayout,
  spec: { tag: string; layers: LayerInfo[]; run: RunConfig; platform?: { architecture: string; os: string } },
): ImageInfo {
  const platform = spec.platform ?? hostPlatform();
  const diffIds = spec.layers.map((l) => l.diffId);
  const config = layout.writeBlob(
    Buffer.from(
      JSON.stringify({
        created: "2024-01-01T00:00:00Z",
        architecture: platform.architecture,
        os: platform.os,
        config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], ...spec.run },
        rootfs: { type: "layers", diff_ids: diffIds },
        history: diffIds.map((_, i) => ({ created: "2024-01-01T00:00:00Z", created_by: `skiff-e2e layer ${i}` })),
      }),
    ),
    MT.config,
  );
  const { desc, bytes } = writeManifest(layout, config, spec.layers);
  layout.tag(spec.tag, desc);
  return { layout, tag: spec.tag, manifest: { ...desc, platform }, manifestBytes: bytes, config, layers: spec.layers, platform };
}

/** Build a small image of gzip'd tar layers of generated files into `layout`. */
export function buildImage(layout: OciLayout, spec: ImageSpec): ImageInfo {
  const prng = new Prng(spec.seed);
  const platform = spec.platform ?? { architecture: "amd64", os: "linux" };
  const layerCount = spec.layers ?? 2;
  const files = spec.filesPerLayer ?? 3;
  const fileSize = spec.fileSize ?? 16 * 1024;
  const layers: LayerInfo[] = [];
  for (let i = 0; i < layerCount; i++) {
    const dir = `data/l${i}`;
    const entries: TarEntry[] = [
      { name: "data", type: "dir" },
      { name: dir, type: "dir" },
      { name: `${dir}/seed.txt`, type: "file", data: Buffer.from(`${spec.seed} layer ${i}\n`) },
    ];
    for (let j = 0; j < files; j++) {
      const size = Math.max(1, fileSize - 1000 + prng.int(2000));
      entries.push({ name: `${dir}/f${j}.bin`, type: "file", data: prng.bytes(size) });
    }
    const tar = tarArchive(entries);
    const gz = gzipSync(tar, { level: 6 });
    layers.push({ ...layout.writeBlob(gz, MT.layerGzip), diffId: sha256(tar) });
  }
  const config = layout.writeBlob(
    configBlob(platform, layers.map((l) => l.diffId), spec.seed),
    MT.config,
  );
  const { desc, bytes } = writeManifest(layout, config, layers);
  const manifest = { ...desc, platform };
  if (spec.untagged !== true) layout.tag(spec.tag, desc);
  return { layout, tag: spec.tag, manifest, manifestBytes: bytes, config, layers, platform };
}

/** Build a multi-platform image: one small image per platform, and an image index tagged `tag`. */
export function buildIndex(
  layout: OciLayout,
  spec: { tag: string; seed: string; platforms: { architecture: string; os: string }[]; layers?: number },
): IndexInfo {
  const images = spec.platforms.map((platform, i) =>
    buildImage(layout, {
      tag: `${spec.tag}-${platform.os}-${platform.architecture}`,
      seed: `${spec.seed}/${i}/${platform.architecture}`,
      layers: spec.layers ?? 1,
      platform,
      untagged: true,
    }),
  );
  const index = {
    schemaVersion: 2,
    mediaType: MT.index,
    manifests: images.map((img) => ({
      mediaType: MT.manifest,
      digest: img.manifest.digest,
      size: img.manifest.size,
      platform: img.platform,
    })),
  };
  const indexBytes = Buffer.from(JSON.stringify(index, null, 2));
  const desc = layout.writeBlob(indexBytes, MT.index);
  layout.tag(spec.tag, desc);
  return { layout, tag: spec.tag, index: desc, indexBytes, images };
}

/**
 * Build an image with one uncompressed tar layer of at least `layerBytes` bytes of incompressible
 * pseudo-random data, streamed to disk in 1 MiB pieces (never held in memory); the digest is computed
 * while writing.
 */
export async function buildLargeImage(
  layout: OciLayout,
  spec: { tag: string; seed: string; layerBytes: number },
): Promise<ImageInfo> {
  const prng = new Prng(spec.seed);
  const tmp = join(layout.dir, "blobs", "large-layer.tmp");
  const fh = await open(tmp, "w");
  const hash = createHash("sha256");
  let written = 0;
  const write = async (b: Buffer) => {
    hash.update(b);
    await fh.write(b, 0, b.length, null);
    written += b.length;
  };
  try {
    const chunk = 1 << 20;
    const fileSize = Math.ceil(spec.layerBytes / chunk) * chunk;
    await write(tarHeader({ name: "big", type: "dir" }));
    await write(tarHeader({ name: "big/random.bin", type: "file", size: fileSize }));
    const pieces = fileSize / chunk;
    for (let i = 0; i < pieces; i++) await write(prng.bytes(chunk));
    await write(Buffer.alloc(1024)); // end of archive (fileSize is a multiple of 512: no padding)
  } finally {
    await fh.close();
  }
  const digest = `sha256:${hash.digest("hex")}`;
  renameSync(tmp, layout.blobPath(digest));
  const layer: LayerInfo = { mediaType: MT.layerTar, digest, size: written, diffId: digest };
  const platform = { architecture: "amd64", os: "linux" };
  const config = layout.writeBlob(configBlob(platform, [digest], spec.seed), MT.config);
  const { desc, bytes } = writeManifest(layout, config, [layer]);
  layout.tag(spec.tag, desc);
  return { layout, tag: spec.tag, manifest: { ...desc, platform }, manifestBytes: bytes, config, layers: [layer], platform };
}

/**
 * Push the layout's `tag` to `dest` (`HOST:PORT/NAME:TAG`) with skopeo, keeping every digest
 * (`--preserve-digests`, so uncompressed layers are not recompressed); `--all` for indexes.
 */
export async function pushImage(
  layout: OciLayout,
  tag: string,
  dest: string,
  options: { creds?: string; all?: boolean; timeoutMs?: number } = {},
): Promise<void> {
  await skopeoCopy(`oci:${layout.dir}:${tag}`, `docker://${dest}`, {
    destCreds: options.creds,
    all: options.all,
    preserveDigests: true,
    timeoutMs: options.timeoutMs,
  });
}
