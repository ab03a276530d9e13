// An OCI image layout directory (oci-layout, index.json, blobs/<alg>/<hex>) as an ImageSource.
import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Descriptor, FetchedManifest, ImageSource } from "../convert/image-source.ts";
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
    blob: async (d) => fileStream(blobPath(d)),
  };
}

/** Bytes read ahead of the converter, in pieces of READ_PIECE. */
const READ_PIECE = 2 ** 20;
const READ_AHEAD_PIECES = 4;

/**
 * A file as a stream of 1 MiB pieces, each read into a buffer of its own on the thread pool. Not
 * Readable.toWeb, which copies every piece it passes on (docs/benchmarks.md, "Converting layers").
 */
async function fileStream(path: string): Promise<ReadableStream<Uint8Array>> {
  const file = await open(path, "r");
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await file.close();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const buf = Buffer.allocUnsafe(READ_PIECE); // only the bytes read are passed on
          const { bytesRead } = await file.read(buf, 0, READ_PIECE, null);
          if (bytesRead === 0) {
            await close();
            controller.close();
            return;
          }
          controller.enqueue(new Uint8Array(buf.buffer, buf.byteOffset, bytesRead));
        } catch (err) {
          await close().catch(() => {});
          controller.error(err);
        }
      },
      cancel: close,
    },
    { highWaterMark: READ_AHEAD_PIECES },
  );
}
