// Which layers the snapshotter serves lazily, and readying them. A layer qualifies when containerd's
// CRI plugin labelled it (image reference, manifest and layer digests) and the skiff proxy has a
// lazy view of that image: the image bootstrap (pinned to the manifest digest, waited for while
// the proxy converts) names the layer, and the layer's own bootstrap is the same conversion. Then
// the mounts daemon mounts the layer, and the snapshotter commits it without a download. The layer
// bootstraps are asked for beside the image's, with the parameters this node asks for: a warm
// proxy answers them with the conversion the image bootstrap then names, one round trip sooner.
// Anything else falls back to an ordinary unpack: the reason is logged and counted, never fatal.
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fetchBootstrap, fetchLayerBootstrap, type FetchedBootstrap, type FetchLike } from "../../../src/client/lazy-api.ts";
import type { Bootstrap } from "../../../src/format/decode.ts";
import type { ChunkCodec } from "../../../src/format/chunk-codec.ts";
import type { BlobRef } from "../../../src/format/model.ts";
import { DEFAULT_PARAMS, paramsId, parseChunkSize, parseParamsId } from "../../../src/format/params.ts";
import { toHex } from "../../../src/hash/hasher.ts";
import { nodeHasher } from "../../../src/hash/node.ts";
import { errorMessage } from "../../../src/util/error-message.ts";
import type { LazyLayerRecord } from "./metadata.ts";
import type { MountsClient } from "./mounts-client.ts";
import type { RemoteLayers } from "./snapshotter.ts";

export const CRI_IMAGE_REF = "containerd.io/snapshot/cri.image-ref";
export const CRI_MANIFEST_DIGEST = "containerd.io/snapshot/cri.manifest-digest";
export const CRI_LAYER_DIGEST = "containerd.io/snapshot/cri.layer-digest";
/** The image's layers from this one up, comma-separated (as many as fit a label). */
export const CRI_IMAGE_LAYERS = "containerd.io/snapshot/cri.image-layers";

export interface LazyLayersOptions {
  /** The skiff proxy's origin, e.g. `http://10.0.0.1:8080`. */
  proxy: string;
  fetchImpl: FetchLike;
  mounts: MountsClient;
  /** How long Prepare waits for the proxy's conversion before unpacking the layer normally. */
  convertTimeoutMs: number;
  /** Conversion parameters asked of the proxy; its defaults when absent. */
  codec?: string;
  chunkSize?: string;
  platform?: string;
  log: (message: string) => void;
  /** Counts a layer prepared, lazily or with the reason it was not. */
  count: (outcome: "lazy" | "ordinary", reason?: string) => void;
}

/** Where `ref` lives on the proxy: its repository, and `ns` unless it is the proxy's own registry. */
export function locateImage(ref: string, proxy: string): { name: string; ns?: string } {
  const at = ref.indexOf("@");
  let path = at >= 0 ? ref.slice(0, at) : ref;
  const colon = path.lastIndexOf(":");
  if (colon > path.lastIndexOf("/")) path = path.slice(0, colon);
  const slash = path.indexOf("/");
  const first = slash < 0 ? "" : path.slice(0, slash);
  const hasRegistry = first.includes(".") || first.includes(":") || first === "localhost";
  const registry = hasRegistry ? first : "docker.io";
  let name = hasRegistry ? path.slice(slash + 1) : path;
  if (registry === "docker.io" && !name.includes("/")) name = `library/${name}`;
  return registry === new URL(proxy).host ? { name } : { name, ns: registry };
}

export class LazyLayers implements RemoteLayers {
  readonly #o: LazyLayersOptions;
  // One image bootstrap request per image, shared by its layers' Prepares (containerd asks layer by layer).
  readonly #images = new Map<string, Promise<FetchedBootstrap>>();
  // Every layer's bootstrap, asked for together once the image's is in: containerd prepares the
  // layers one after another, and each then finds its own on the way or here.
  readonly #layers = new Map<string, Promise<Bootstrap>>();
  // Layer bootstraps asked for before the image's was in, with the parameters this node asks for;
  // null when the proxy had none (it answered the image with other parameters, or converts still).
  readonly #early = new Map<string, Promise<Bootstrap | null>>();
  /** The parameters this node asks for, as the proxy names them (`v1-c20-deflate-raw`); null when they can't be told. */
  readonly #asked: string | null;

  constructor(o: LazyLayersOptions) {
    this.#o = o;
    this.#asked = askedParams(o);
  }

  async prepare(labels: Record<string, string>, mountpoint: string): Promise<{ lazy: LazyLayerRecord; size: number; inodes: number } | null> {
    const imageRef = labels[CRI_IMAGE_REF];
    const manifest = labels[CRI_MANIFEST_DIGEST];
    const layerDigest = labels[CRI_LAYER_DIGEST];
    if (!imageRef || !manifest || !layerDigest) {
      this.#o.count("ordinary", "no CRI labels");
      return null;
    }
    const { proxy } = this.#o;
    try {
      const { name, ns } = locateImage(imageRef, proxy);
      const pending = this.#image(name, ns, manifest);
      for (const digest of new Set([layerDigest, ...(labels[CRI_IMAGE_LAYERS]?.split(",") ?? [])])) this.#askEarly(name, ns, digest.trim());
      const image = await pending;
      if (image.manifestDigest !== manifest) throw new Error(`the proxy converted manifest ${image.manifestDigest}, not ${manifest}`);
      const b = image.bootstrap;
      const blob = Array.from({ length: b.blobCount }, (_, i) => b.blob(i)).find((x) => x.layerDigest === layerDigest);
      if (!blob) throw new Error(`the image bootstrap has no layer ${layerDigest}`);
      const layer = await this.#layer(name, ns, image.params, blob);
      const bootstrapFile = join(dirname(mountpoint), "layer.bootstrap");
      await writeFile(bootstrapFile, layer.bytes);
      await this.#o.mounts.mount({ mountpoint, bootstrapFile, proxy, name, ns, params: image.params, image: imageRef, manifestDigest: image.manifestDigest, layerDigest });
      let size = 0;
      for (let i = 0; i < layer.inodeCount; i++) {
        const ino = layer.inode(i);
        if (ino.type === "file") size += ino.size;
      }
      this.#o.count("lazy");
      this.#o.log(`lazy: ${imageRef} layer ${layerDigest}`);
      return { lazy: { proxy, name, ns, layerDigest, params: image.params, imageRef }, size, inodes: layer.inodeCount };
    } catch (err) {
      const reason = errorMessage(err);
      this.#o.count("ordinary", classify(reason));
      this.#o.log(`unpacking ${imageRef} layer ${layerDigest} normally: ${reason}`);
      return null;
    }
  }

  release(mountpoint: string): Promise<void> {
    return this.#o.mounts.unmount(mountpoint);
  }

  #image(name: string, ns: string | undefined, manifest: string): Promise<FetchedBootstrap> {
    const key = `${ns ?? ""}/${name}@${manifest}`;
    let pending = this.#images.get(key);
    if (!pending) {
      const { proxy, fetchImpl, convertTimeoutMs, codec, chunkSize, platform } = this.#o;
      pending = fetchBootstrap(proxy, name, manifest, { ns, codec, chunkSize, platform, timeoutMs: convertTimeoutMs, fetchImpl, hasher: nodeHasher });
      remember(this.#images, key, pending);
      void pending.then(
        (image) => {
          for (let i = 0; i < image.bootstrap.blobCount; i++) this.#layer(name, ns, image.params, image.bootstrap.blob(i)).catch(() => undefined);
        },
        () => undefined,
      );
    }
    return pending;
  }

  #layer(name: string, ns: string | undefined, params: string, blob: BlobRef): Promise<Bootstrap> {
    const dataDigest = toHex(blob.dataDigest);
    const key = `${ns ?? ""}/${name} ${blob.layerDigest} ${params} ${dataDigest}`;
    let pending = this.#layers.get(key);
    if (!pending) {
      const { proxy, fetchImpl, convertTimeoutMs } = this.#o;
      const early = this.#early.get(`${ns ?? ""}/${name} ${blob.layerDigest} ${params}`) ?? Promise.resolve(null);
      // The early answer when it is this very conversion; else (none, or another) asked for again.
      pending = early.then((b) => (b && toHex(b.blob(0).dataDigest) === dataDigest ? b : fetchLayerBootstrap(proxy, name, blob.layerDigest, params, { ns, dataDigest, timeoutMs: convertTimeoutMs, fetchImpl, hasher: nodeHasher })));
      remember(this.#layers, key, pending);
    }
    return pending;
  }

  /** Asks for a layer's bootstrap with this node's parameters before the image bootstrap names them. */
  #askEarly(name: string, ns: string | undefined, layerDigest: string): void {
    const params = this.#asked;
    if (params === null) return;
    const key = `${ns ?? ""}/${name} ${layerDigest} ${params}`;
    if (this.#early.has(key)) return;
    const { proxy, fetchImpl, convertTimeoutMs } = this.#o;
    const early = fetchLayerBootstrap(proxy, name, layerDigest, params, { ns, dataDigest: null, timeoutMs: convertTimeoutMs, fetchImpl, hasher: nodeHasher }).catch(() => null);
    remember(this.#early, key, early);
  }
}

/** `v<format>-c<shift>-<codec>` for the codec and chunk size this node asks for (the proxy's own defaults where it names none). */
function askedParams(o: Pick<LazyLayersOptions, "codec" | "chunkSize">): string | null {
  try {
    const id = paramsId({ codec: (o.codec ?? DEFAULT_PARAMS.codec) as ChunkCodec, chunkShift: o.chunkSize ? parseChunkSize(o.chunkSize) : DEFAULT_PARAMS.chunkShift });
    return parseParamsId(id) ? id : null;
  } catch {
    return null;
  }
}

/** Keeps a request's answer for a minute (while an image's layers are prepared); a failure not at all, so the next pull asks again. */
function remember<T>(map: Map<string, Promise<T>>, key: string, pending: Promise<T>): void {
  map.set(key, pending);
  const forget = () => setTimeout(() => map.delete(key), 60_000).unref();
  pending.then(forget, () => map.delete(key));
}

/** A short, bounded label for the fallback counter. */
function classify(reason: string): string {
  if (/within \d+ ms/.test(reason)) return "timeout";
  if (/SIZE_INVALID|MANIFEST_INVALID|UNSUPPORTED|422/.test(reason)) return "not convertible";
  if (/ECONNREFUSED|ENOTFOUND|fetch failed|EHOSTUNREACH|ECONNRESET/.test(reason)) return "proxy unreachable";
  if (/mounts daemon|cannot mount|fuse/i.test(reason)) return "mount failed";
  return "other";
}
