// Conversions on the proxy: each layer converted once per process however many requests want it
// (single flight per layer digest and parameters), image bootstraps merged once per manifest,
// platform and parameters, and everything published in the store so restarts reuse it. A failed
// conversion publishes nothing and leaves nothing behind: the next request simply tries again.
// A layer the cache lacks is converted while it downloads (./layer-feed.ts): one pass over the
// upstream body verifies, stores and converts it, and the conversion is published only once the
// blob has matched its digest and is stored.
// With a step budget (Workers, where CPU time per invocation is limited) each request converts at
// most that much and the conversion goes on at the next request; a lease in the store keeps other
// processes sharing it from converting the same layer meanwhile.
// With `noneFirst`, an image asked for with a chunk codec (deflate-raw) is converted with `none`
// first, which takes a fraction of the CPU, and the requested codec after it from the stored blobs:
// a node waiting on a cold edge gets the `none` bootstrap as soon as it is made (ImageJob.early).
import type { ChunkEncoder } from "../convert/chunk-encoder.ts";
import type { BlobCache } from "../cache/blobs.ts";
import { BlobPending } from "../cache/blob-steps.ts";
import { blobKey, imageBootstrapKey, layerBootstrapKey, layerLeaseKey } from "../store/keys.ts";
import type { Manifest, ManifestCache } from "../cache/manifests.ts";
import { Bootstrap } from "../format/decode.ts";
import type { HasherFactory } from "../hash/hasher.ts";
import { OciError } from "../oci/errors.ts";
import type { Metrics } from "../util/metrics.ts";
import { convertImage } from "../convert/image.ts";
import { ImageError, platformManifest, resolveImage, type ImageSource, type ResolvedImage } from "../convert/image-source.ts";
import { ConversionPaused, convertLayer, LayerDigestError, type ConvertedLayer, type ConvertLayerOptions, type LayerSource } from "../convert/layer.ts";
import { CheckpointError } from "../convert/checkpoint.ts";
import { LayerFormatError, sniffCompression, type GunzipFactory, type LayerCompression, type UnzstdFactory } from "../convert/decompress.ts";
import { TarError } from "../convert/tar.ts";
import { paramsId, type ConvertParams } from "../format/params.ts";
import { parseDigest, type Digest } from "../oci/reference.ts";
import { getBytes, type ContentStore } from "../store/store.ts";
import { within } from "../util/sleep.ts";
import { LayerFeed } from "./layer-feed.ts";
import { Lease, LeaseLost } from "../store/lease.ts";

export interface ConversionsDeps {
  store: ContentStore;
  hasher: HasherFactory;
  /** The runtime's gzip decoder (the converter's built-in one when absent). */
  gunzip?: GunzipFactory;
  unzstd?: UnzstdFactory;
  /** The runtime's chunk encoding (on the converting thread when absent). */
  chunkEncoder?: ChunkEncoder;
  metrics: Metrics;
  blobs: BlobCache;
  manifests: ManifestCache;
  /** Layers larger than this (compressed) are refused before anything is fetched. */
  maxLayerBytes: number;
  /** Layers that expand past this many bytes are refused as they do (default: the converter's). */
  maxExpandedBytes?: number;
  /** Layers with more tar entries than this are refused (default: the converter's). */
  maxLayerEntries?: number;
  /** Images whose layers, to be merged, hold more inodes than this together are refused (no limit by default). */
  maxMergedEntries?: number;
  /** Convert in steps of this many content bytes per request (one pass when absent). */
  stepBytes?: number;
  /** How long another process waits before taking over a layer whose converter went silent. */
  leaseMs?: number;
  /** Convert with codec `none` before any other codec, and offer that bootstrap meanwhile (ImageJob.early). */
  noneFirst?: boolean;
  log?: (message: string) => void;
  now?: () => number;
}

/** The bootstrap is not ready yet: a step ended, or another process is converting. Answered with 202. */
export class ConversionPending extends Error {}

const DEFAULT_LEASE_MS = 120_000;

export interface ImageBootstrap {
  bootstrap: Bootstrap;
  manifestDigest: Digest;
  platform: string;
  /** The conversion's parameters: with `noneFirst`, an early answer's differ from those asked for. */
  params: ConvertParams;
}

/** An image bootstrap being found or made, shared by every request that wants it meanwhile. */
export interface ImageJob {
  result: Promise<ImageBootstrap>;
  /**
   * Resolves when the bootstrap was not stored and layers are being converted and merged: only
   * then is there anything for a request to wait for. Never resolves for a stored bootstrap.
   */
  converting: Promise<void>;
  /**
   * With `noneFirst`, for a codec other than `none`: the image's `none` bootstrap, once it is made
   * and the requested one is still being converted. Never resolves otherwise.
   */
  early: Promise<ImageBootstrap>;
  /**
   * Called by a request once it has sent the early answer (its body read to the end, or dropped).
   * The requested codec's conversion would take the thread and the thread pool from that answer:
   * it starts at the first call, or EARLY_ANSWER_MS after the early bootstrap was made.
   */
  earlySent(): void;
}

/** How long the requested codec's conversion waits at most for the early answer to go out. */
const EARLY_ANSWER_MS = 1000;

export class Conversions {
  readonly #deps: ConversionsDeps;
  readonly #now: () => number;
  readonly #layers = new Map<string, { job: Promise<ConvertedLayer>; started: number }>();
  readonly #images = new Map<string, { job: ImageJob; started: number }>();
  /** Layer conversions started before their image was resolved (#startFirstLayer), by repository and job. */
  readonly #startedEarly = new Map<string, EarlyLayer>();
  /** The repository each running layer conversion downloads for (#layerFor). */
  readonly #repositoryOf = new WeakMap<Promise<ConvertedLayer>, string>();

  constructor(deps: ConversionsDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  /** The bootstrap of `name` at `root` (a manifest or index) for a platform, converting as needed. */
  image(name: string, root: Manifest, platform: string, params: ConvertParams): ImageJob {
    const key = `${root.digest.value}\n${platform}\n${paramsId(params)}`;
    return this.#shared(this.#images, key, () => {
      let startConverting!: () => void;
      const converting = new Promise<void>((resolve) => (startConverting = resolve));
      let offerEarly!: (early: ImageBootstrap) => void;
      const early = new Promise<ImageBootstrap>((resolve) => (offerEarly = resolve));
      let earlySent!: () => void;
      const sent = new Promise<void>((resolve) => (earlySent = resolve));
      const result = this.#image(name, root, platform, params, { startConverting, offerEarly, sent });
      return { job: { result, converting, early, earlySent }, settled: result };
    });
  }

  /**
   * The job running under `key`, or a new one from `start`, kept until it settles. In steps
   * (Workers) a job is one invocation's step: one that has run longer than a lease without settling
   * belongs to an invocation that ended, taking its I/O along, and is started again.
   */
  #shared<J>(jobs: Map<string, { job: J; started: number }>, key: string, start: () => { job: J; settled: Promise<unknown> }): J {
    const now = this.#now();
    const running = jobs.get(key);
    if (running && !this.#stale(running.started)) return running.job;
    const entry = { ...start(), started: now };
    jobs.set(key, entry);
    const forget = () => {
      if (jobs.get(key) === entry) jobs.delete(key);
    };
    entry.settled.then(forget, forget);
    return entry.job;
  }

  /** A job started this long ago belongs to an invocation that ended (steps only; see #shared). */
  #stale(started: number): boolean {
    return !!this.#deps.stepBytes && this.#now() - started > (this.#deps.leaseMs ?? DEFAULT_LEASE_MS);
  }

  /**
   * The bootstrap of `name`'s platform manifest `manifest` with `params` if it has been converted;
   * null when not (nothing is converted here), or when `manifest` is an index. `platform` labels a
   * manifest whose config names none, as the bootstrap route's default does.
   */
  async stored(name: string, manifest: Manifest, platform: string, params: ConvertParams): Promise<ImageBootstrap | null> {
    const found = await this.#stored(this.#source(name, manifest), platform, params, true).catch((err: unknown) => {
      if (err instanceof ImageError) return null;
      throw err;
    });
    return found?.bootstrap ?? null;
  }

  async #stored(source: ImageSource, platform: string, params: ConvertParams, manifestOnly = false): Promise<{ image: ResolvedImage; bootstrap: ImageBootstrap | null }> {
    const image = await resolveImage(source, platform, { manifestOnly });
    const stored = await getBytes(this.#deps.store, imageBootstrapKey(image.manifestDigest, paramsId(params), image.platform));
    return { image, bootstrap: stored && { bootstrap: Bootstrap.decode(stored), manifestDigest: image.manifestDigest, platform: image.platform, params } };
  }

  async #image(
    name: string,
    root: Manifest,
    platform: string,
    params: ConvertParams,
    job: { startConverting: () => void; offerEarly: (early: ImageBootstrap) => void; sent: Promise<void> },
  ): Promise<ImageBootstrap> {
    const source = this.#source(name, root);
    const options = {
      store: this.#deps.store,
      hasher: this.#deps.hasher,
      gunzip: this.#deps.gunzip,
      unzstd: this.#deps.unzstd,
      chunkEncoder: this.#deps.chunkEncoder,
      params,
      platform,
      maxMergedEntries: this.#deps.maxMergedEntries,
      // One budget for the whole request, however many layers it reaches.
      budget: this.#deps.stepBytes ? { remaining: this.#deps.stepBytes } : undefined,
    };
    // The conversion that makes the one pass over the upstream (see noneFirst) may start at once.
    const onePass: ConvertParams = this.#deps.noneFirst ? { ...params, codec: "none" } : params;
    const early = this.#startFirstLayer(name, root, source, { ...options, params: onePass }).catch(() => null);
    try {
      const { image, bootstrap } = await this.#stored(source, platform, params).catch(rethrowAsOci);
      if (bootstrap) return bootstrap;
      job.startConverting();
      // The `none` conversion takes the one pass over the upstream; this one then reads the stored blobs.
      if (this.#deps.noneFirst && params.codec !== "none") {
        job.offerEarly(await this.image(name, root, platform, { ...params, codec: "none" }).result);
        await within(EARLY_ANSWER_MS, job.sent);
      }
      const converted = await convertImage(source, { ...options, image, layerConverter: (layer, opts) => this.#layerFor(name, layer, opts) }).catch(rethrowAsOci);
      return { bootstrap: converted.bootstrap, manifestDigest: image.manifestDigest, platform: image.platform, params };
    } finally {
      const started = await early;
      if (started && this.#startedEarly.get(started.key) === started.entry) this.#startedEarly.delete(started.key);
    }
  }

  /** The conversion of `layer` for repository `name`: one started early, one running or stored, or a new one. */
  async #layerFor(name: string, layer: LayerSource, opts: ConvertLayerOptions): Promise<ConvertedLayer> {
    // Kept until the image job that started it ends, failed or not: that failure is the image's, not a cue to download again.
    const early = this.#startedEarly.get(earlyKey(name, layer, opts));
    if (early && !this.#stale(early.started)) return early.job;
    if (await this.#deps.blobs.cached(name, layer.digest)) return this.#layer(name, layer, opts);
    // A conversion made for another repository (stored, or still running for one) is shared
    // only once this repository is confirmed to have the layer too. One this call converts, or one
    // running for this repository, downloads the layer under this name, which confirms it: a HEAD
    // would only cost a round trip. A confirmation is stored as a link, so the image bootstrap's own
    // check (http/lazy.ts) and later requests need no second HEAD.
    const running = this.#layers.get(layerJobKey(layer, opts));
    const joins = running !== undefined && this.#repositoryOf.get(running.job) !== name;
    if (joins) await this.#deps.blobs.entitled(name, layer.digest);
    const converted = await this.#layer(name, layer, opts);
    // Found stored rather than converted: not downloaded here, so confirmed before it is used.
    if (!joins && !converted.converted) await this.#deps.blobs.entitled(name, layer.digest);
    return converted;
  }

  /**
   * A lone manifest names its platform only in its config, and the stored image bootstrap is found
   * by platform: on a cold edge, a round trip to the upstream before anything else. Layers need no
   * platform, so the first one starts converting (downloading) beside the config, and the image's
   * conversion takes it up (#layerFor) while the image job that started it runs. Not when the
   * config is cached: then the image bootstrap may well be stored, and finding out is quick. Nor in
   * steps (Workers): there, work that no request awaits (when finding the image fails) dies with
   * its invocation, leaving the layer's job and lease to hold up the next requests.
   */
  async #startFirstLayer(name: string, root: Manifest, source: ImageSource, options: ConvertLayerOptions): Promise<{ key: string; entry: EarlyLayer } | null> {
    if (this.#deps.stepBytes) return null;
    const manifest = root.bytes ? platformManifest({ digest: root.digest, mediaType: root.mediaType, bytes: root.bytes }) : null;
    const config = typeof manifest?.config?.digest === "string" ? parseDigest(manifest.config.digest) : null;
    if (!manifest || !config || (await this.#deps.blobs.cached(name, config))) return null;
    const layer = manifest.layers[0]!;
    const first: LayerSource = { ...layer, open: () => source.blob(layer.digest) };
    const key = earlyKey(name, first, options);
    const running = this.#startedEarly.get(key);
    if (running && !this.#stale(running.started)) return null;
    const entry = { job: this.#layerFor(name, first, options), started: this.#now() };
    entry.job.catch(() => {}); // the image's conversion reports it, unless the image turns out to be stored
    this.#startedEarly.set(key, entry);
    return { key, entry };
  }

  /** One conversion per layer and parameters at a time in this process. */
  #layer(name: string, layer: LayerSource, opts: ConvertLayerOptions): Promise<ConvertedLayer> {
    return this.#shared(this.#layers, layerJobKey(layer, opts), () => {
      const job = this.#convertLayer(name, layer, opts);
      this.#repositoryOf.set(job, name);
      return { job, settled: job };
    });
  }

  async #convertLayer(name: string, layer: LayerSource, opts: ConvertLayerOptions): Promise<ConvertedLayer> {
    const { metrics, maxLayerBytes, store, blobs } = this.#deps;
    if (layer.size !== undefined && layer.size > maxLayerBytes) {
      throw new OciError("SIZE_INVALID", `layer ${layer.digest.value} is ${layer.size} bytes, over this proxy's limit of ${maxLayerBytes}`, { status: 422 });
    }
    const now = this.#now;
    const id = paramsId(opts.params);
    let lease: Lease | null = null;
    if (opts.budget && !(await store.stat(layerBootstrapKey(layer.digest, id)))) {
      lease = await Lease.acquire(store, layerLeaseKey(layer.digest, id), { ttlMs: this.#deps.leaseMs ?? DEFAULT_LEASE_MS, now });
      if (!lease) throw new ConversionPending(`layer ${layer.digest.value} is being converted by another instance`);
    }
    const started = now();
    let began = false;
    const feed = new LayerFeed(blobs, name, layer.digest, () => layer.open());
    try {
      const result = await convertLayer(
        {
          ...layer,
          // Both ways in are the verified blob cache: its live stream, checked as it passes, or its store.
          checked: true,
          open: async () => {
            began = true;
            metrics.inc("skiff_conversions_started_total");
            return feed.open();
          },
        },
        {
          ...opts,
          maxExpandedBytes: this.#deps.maxExpandedBytes,
          maxEntries: this.#deps.maxLayerEntries,
          // Before anything is committed: the bytes converted are the verified, stored blob, and the lease still held.
          guard: async () => {
            await feed.verified();
            await lease?.confirm();
          },
        },
      );
      if (began) {
        metrics.inc("skiff_conversions_finished_total");
        metrics.inc("skiff_conversion_seconds_total", {}, (now() - started) / 1000);
      }
      return result;
    } catch (caught) {
      // A blob that failed to download, verify or store is what went wrong, whatever the converter made of its bytes.
      const err = (await feed.settle()) ?? caught;
      // A layer fetched in steps (./layer-feed.ts) goes on at the next request, as a paused conversion does.
      if (err instanceof ConversionPaused || err instanceof LeaseLost || err instanceof BlobPending) {
        if (began) metrics.inc("skiff_conversion_steps_total");
        throw new ConversionPending(err.message);
      }
      if (began) metrics.inc("skiff_conversions_failed_total");
      this.#deps.log?.(`conversion of layer ${layer.digest.value} failed: ${(err as Error).message}`);
      throw err;
    } finally {
      await lease?.release();
    }
  }

  /**
   * `name`'s layer converted with `params` again, when the store lacks it (evicted from a bounded
   * store, or taken by a bucket's lifecycle rule): nodes reach the data routes with bootstraps made
   * before, and a conversion is deterministic, so the data comes back byte for byte. The media type,
   * which the manifest gave the first time, is taken from the layer's first bytes, which the
   * converter checks against it anyway.
   */
  async layerAgain(name: string, digest: Digest, params: ConvertParams): Promise<void> {
    const { store, hasher, gunzip, unzstd, chunkEncoder, stepBytes, blobs, maxLayerBytes } = this.#deps;
    // Any blob of the repository can be named here: one over the limit is refused before it is fetched.
    const { size } = (await blobs.cached(name, digest)) ?? (await blobs.upstreamHead(name, digest));
    if (size > maxLayerBytes) throw new OciError("SIZE_INVALID", `layer ${digest.value} is ${size} bytes, over this proxy's limit of ${maxLayerBytes}`, { status: 422 });
    const open = () => this.#blob(name, digest);
    const mediaType = LAYER_MEDIA_TYPE[sniffCompression(await firstPiece(await open()))];
    const options = { store, hasher, gunzip, unzstd, chunkEncoder, params, budget: stepBytes ? { remaining: stepBytes } : undefined };
    await this.#layerFor(name, { digest, mediaType, size, open }, options).catch(rethrowAsOci);
  }

  /** The image as the converter sees it, read through the verified caches under `name`. */
  #source(name: string, root: Manifest): ImageSource {
    const { manifests } = this.#deps;
    const asFetched = (m: Manifest) => ({ digest: m.digest, mediaType: m.mediaType, bytes: m.bytes ?? new Uint8Array() });
    return {
      root: async () => asFetched(root.bytes ? root : await manifests.byDigest(name, root.digest, null)),
      manifest: async (digest) => asFetched(await manifests.byDigest(name, digest, null)),
      blob: (digest) => this.#blob(name, digest),
    };
  }

  /**
   * A blob read verified: pulled into the cache first (a layer already being downloaded for someone
   * else, a config), so a later pull is a cache hit.
   */
  async #blob(name: string, digest: Digest): Promise<ReadableStream<Uint8Array>> {
    const { blobs, store } = this.#deps;
    if (!(await blobs.cached(name, digest))) await (await blobs.fetch(name, digest, false)).done;
    const body = await store.get(blobKey(digest));
    if (!body) throw new OciError("BLOB_UNKNOWN", `blob ${digest.value} vanished from the store`);
    return body;
  }
}

/** A media type for each compression, as the converter maps them back. */
const LAYER_MEDIA_TYPE: Record<LayerCompression, string> = {
  none: "application/vnd.oci.image.layer.v1.tar",
  gzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
};

/** The stream's first piece (empty when it has none); the rest is dropped. */
async function firstPiece(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const reader = stream.getReader();
  try {
    return (await reader.read()).value ?? new Uint8Array();
  } finally {
    reader.cancel().catch(() => {});
  }
}

const layerJobKey = (layer: LayerSource, opts: ConvertLayerOptions) => `${layer.digest.value}\n${paramsId(opts.params)}`;
const earlyKey = (name: string, layer: LayerSource, opts: ConvertLayerOptions) => `${name}\n${layerJobKey(layer, opts)}`;

interface EarlyLayer {
  job: Promise<ConvertedLayer>;
  started: number;
}

/** Conversion failures as the OCI errors a client sees. */
function rethrowAsOci(err: unknown): never {
  if (err instanceof OciError || err instanceof ConversionPending) throw err;
  if (err instanceof CheckpointError) throw new OciError("UNAVAILABLE", `conversion state was damaged and has been reset; retry: ${err.message}`);
  if (err instanceof LayerDigestError) throw new OciError("UNAVAILABLE", (err as Error).message);
  if (err instanceof LayerFormatError || err instanceof TarError || err instanceof ImageError) {
    throw new OciError("MANIFEST_INVALID", `cannot convert this image: ${(err as Error).message}`, { status: 422 });
  }
  throw err;
}
