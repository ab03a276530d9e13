// An OCI image layout directory (oci-layout, index.json, blobs/<alg>/<hex>) as an ImageSource.
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { Descriptor, FetchedManifest, ImageSource } from "../convert/image.ts";
import { nodeHasher } from "../hash/node.ts";
import { parseDigest, type Digest } from "../oci/reference.ts";
import { UsageError } from "./args.ts";

const REF_NAME = "org.opencontainers.image.ref.name";

/** `DIR:TAG`, `DIR@sha256:…` or `DIR` (when its index names a single image). */
export function parseLayoutReference(text: string): { dir: string; tag?: string; digest?: Digest } {
  const at = text.lastIndexOf("@");
  if (at > 0) {
    const digest = parseDigest(text.slice(at + 1));
    if (!digest) throw new UsageError(`invalid digest in ${JSON.stringify(text)}`);
    return { dir: text.slice(0, at), digest };
  }
  const colon = text.lastIndexOf(":");
  if (colon > text.lastIndexOf("/") && colon > 0) return { dir: text.slice(0, colon), tag: text.slice(colon + 1) };
  return { dir: text };
}

export async function openLayout(reference: string): Promise<ImageSource & { describe: string }> {
  const ref = parseLayoutReference(reference);
  let index: { manifests?: (Descriptor & { annotations?: Record<string, string> })[] };
  try {
    index = JSON.parse(await readFile(join(ref.dir, "index.json"), "utf8"));
  } catch (err) {
    throw new UsageError(`${ref.dir} is not a readable OCI image layout (index.json: ${(err as Error).message})`);
  }
  const manifests = index.manifests ?? [];
  let chosen: Descriptor | undefined;
  if (ref.digest) chosen = manifests.find((m) => m.digest === ref.digest!.value) ?? { mediaType: "", digest: ref.digest.value, size: 0 };
  else if (ref.tag) chosen = manifests.find((m) => m.annotations?.[REF_NAME] === ref.tag);
  else if (manifests.length === 1) chosen = manifests[0];
  if (!chosen) {
    const tags = manifests.map((m) => m.annotations?.[REF_NAME]).filter(Boolean);
    throw new UsageError(ref.tag ? `no image tagged ${JSON.stringify(ref.tag)} in ${ref.dir} (tags: ${tags.join(", ") || "none"})` : `${ref.dir} holds ${manifests.length} images: name one with :TAG`);
  }
  const blobPath = (d: Digest) => join(ref.dir, "blobs", d.algorithm, d.hex);
  const manifest = async (digest: Digest, mediaType = ""): Promise<FetchedManifest> => {
    const bytes = new Uint8Array(await readFile(blobPath(digest)));
    const h = nodeHasher(digest.algorithm);
    h.update(bytes);
    if (h.hex() !== digest.hex) throw new Error(`blob ${digest.value} in ${ref.dir} does not match its digest`);
    return { digest, mediaType, bytes };
  };
  const rootDigest = parseDigest(chosen.digest);
  if (!rootDigest) throw new UsageError(`index.json of ${ref.dir} has an invalid digest`);
  return {
    describe: `${ref.dir}${ref.tag ? `:${ref.tag}` : ""}@${rootDigest.value}`,
    root: () => manifest(rootDigest, chosen.mediaType),
    manifest: (d) => manifest(d),
    // Layers are verified by the converter as they stream.
    // A small chunk-count queue: toWeb would otherwise take the byte highWaterMark as a count.
    blob: async (d) => Readable.toWeb(createReadStream(blobPath(d), { highWaterMark: 1 << 20 }), { strategy: { highWaterMark: 4 } }) as ReadableStream<Uint8Array>,
  };
}
