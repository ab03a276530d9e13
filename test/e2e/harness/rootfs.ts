// Root filesystems for the convert/extract suites: run the skiff CLI, build OCI images from tar
// layers, and snapshot a directory tree (type, mode, owner, size, content hash, link target, link
// count, device numbers, mtime) so that two trees can be compared path by path.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { lstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { MT, OciLayout, sha256, type Descriptor } from "./images.ts";
import { REPO_ROOT, SKIFF_BIN } from "./skiff.ts";

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `node bin/skiff.js ARGS` (needs `npm run build`). */
export function skiff(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [SKIFF_BIN, ...args], { cwd: REPO_ROOT, encoding: "utf8", timeout: 120_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs a command and throws with its stderr unless it exits 0. */
export function sh(command: string, args: string[], opts: { cwd?: string; input?: string | Buffer } = {}): string {
  const r = spawnSync(command, args, { ...opts, encoding: "utf8", timeout: 60_000 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${command} ${args.join(" ")} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

export interface Layer {
  bytes: Uint8Array;
  mediaType: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
}

/** Writes config, layers and manifest into `layout` and tags the manifest. */
export function writeImage(layout: OciLayout, tag: string, layers: Layer[]): { manifest: Descriptor; layers: Descriptor[] } {
  const layerDescs = layers.map((l) => layout.writeBlob(l.bytes, l.mediaType));
  const config = layout.writeBlob(
    Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        config: { Cmd: ["/bin/sh"] },
        rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
      }),
    ),
    MT.config,
  );
  const manifest = {
    schemaVersion: 2,
    mediaType: MT.manifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
    layers: layerDescs.map((d) => ({ mediaType: d.mediaType, digest: d.digest, size: d.size })),
  };
  const desc = layout.writeBlob(Buffer.from(JSON.stringify(manifest)), MT.manifest);
  layout.tag(tag, desc);
  return { manifest: desc, layers: layerDescs };
}

export const diffIdOf = (tar: Uint8Array) => sha256(tar);

export interface TreeEntry {
  type: "file" | "dir" | "symlink" | "char" | "block" | "fifo" | "socket";
  mode: string;
  uid: number;
  gid: number;
  nlink: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: string;
  /** Nanoseconds since the epoch; left out for directories. */
  mtimeNs?: bigint;
}

/** Every path below `root` ("" is the root itself), keyed by its relative path. */
export function snapshot(root: string, opts: { withMtime?: boolean } = {}): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  const visit = (rel: string) => {
    const path = rel === "" ? root : join(root, rel);
    const st = lstatSync(path, { bigint: true });
    const type = st.isFile() ? "file" : st.isDirectory() ? "dir" : st.isSymbolicLink() ? "symlink" : st.isCharacterDevice() ? "char" : st.isBlockDevice() ? "block" : st.isFIFO() ? "fifo" : "socket";
    const e: TreeEntry = { type, mode: `0o${(Number(st.mode) & 0o7777).toString(8)}`, uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink) };
    if (type === "file") {
      e.size = Number(st.size);
      e.sha256 = createHash("sha256").update(readFileSync(path)).digest("hex");
    }
    if (type === "symlink") e.target = readlinkSync(path);
    if (type === "char" || type === "block") e.rdev = `${major(st.rdev)},${minor(st.rdev)}`;
    if (opts.withMtime !== false && type !== "dir") e.mtimeNs = st.mtimeNs;
    out.set(rel, e);
    if (type === "dir") for (const name of readdirSync(path).sort()) visit(rel === "" ? name : `${rel}/${name}`);
  };
  visit("");
  return out;
}

// Linux's encoding of dev_t (glibc gnu_dev_major/minor).
const major = (d: bigint) => ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
const minor = (d: bigint) => (d & 0xffn) | ((d >> 12n) & ~0xffn);

/** Differences between two snapshots, one line each; [] when equal. */
export function diffTrees(want: Map<string, TreeEntry>, got: Map<string, TreeEntry>): string[] {
  const out: string[] = [];
  for (const [p, w] of want) {
    const g = got.get(p);
    if (!g) {
      out.push(`missing /${p} (${w.type})`);
      continue;
    }
    for (const k of Object.keys({ ...w, ...g }) as (keyof TreeEntry)[]) {
      if (w[k] !== g[k]) out.push(`/${p}: ${k} ${String(w[k])} != ${String(g[k])}`);
    }
  }
  for (const [p, g] of got) if (!want.has(p)) out.push(`unexpected /${p} (${g.type})`);
  return out;
}
