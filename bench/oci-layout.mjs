// OCI image layouts of one image, tagged `bench`, for the benchmarks to push with skopeo or convert.
// `diffIds` (sha256 of each uncompressed layer) let containerd unpack it; skiff does not need them.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** Writes `bytes` into the layout's blobs by their digest: the descriptor's digest and size. */
function putBlob(dir, bytes) {
  const hex = createHash("sha256").update(bytes).digest("hex");
  writeFileSync(join(dir, "blobs", "sha256", hex), bytes);
  return { digest: `sha256:${hex}`, size: bytes.length };
}

/** The config, manifest and index of an image of `layers` (descriptors of blobs in the layout). */
function writeImage(dir, layers, diffIds) {
  const config = putBlob(dir, Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: diffIds }, config: {} })));
  const manifest = putBlob(dir, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers })));
  writeFileSync(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(dir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MANIFEST, ...manifest, annotations: { "org.opencontainers.image.ref.name": "bench" } }] }));
}

/** A layout of gzip layers given as bytes. */
export function writeLayout(dir, layers, diffIds = []) {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  writeImage(dir, layers.map((l) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...putBlob(dir, l) })), diffIds);
}

/** A layout of one layer whose file is moved in (hashed by sha256sum, not read into memory); returns the blob's path. */
export function layoutOfLayerFile(dir, layerPath, mediaType) {
  mkdirSync(join(dir, "blobs", "sha256"), { recursive: true });
  const hex = execFileSync("sha256sum", [layerPath], { encoding: "utf8" }).split(" ")[0];
  const blob = join(dir, "blobs", "sha256", hex);
  renameSync(layerPath, blob);
  writeImage(dir, [{ mediaType, digest: `sha256:${hex}`, size: statSync(blob).size }], []);
  return blob;
}

/** One regular file as ustar: its 512-byte header, then `body` padded to a whole block. */
export function tarFileEntry(name, body) {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(`${body.length.toString(8).padStart(11, "0")}\0`, 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write("0", 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return Buffer.concat([h, body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}
