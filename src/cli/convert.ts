// `skiff convert`: converts an image from an OCI layout directory into DIR — a filesystem store
// holding each layer's data blob and bootstrap and the image bootstrap — and describes the result
// in DIR/image.json for `skiff inspect` and `skiff extract`.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CHUNK_CODECS } from "../format/chunk-codec.ts";
import { compressionForMediaType } from "../convert/decompress.ts";
import { resolveImage } from "../convert/image-source.ts";
import { DEFAULT_PARAMS, paramsId, parseChunkSize, type ConvertParams } from "../format/params.ts";
import { nodeHasher } from "../hash/node.ts";
import { nodeUnzstd } from "../runtime/node-zstd.ts";
import { parseFlags, UsageError } from "./args.ts";
import { openLayout } from "./oci-layout.ts";
import { bar, formatBytes, Progress } from "./progress.ts";
import { IMAGE_JSON, type ImageJson } from "./image-json.ts";

export const convertHelp = `Usage: skiff convert <oci-layout-dir>[:TAG|@DIGEST] --out DIR [options]

Converts an image into skiff's chunked format: every layer is split into content-addressed
chunks stored in one data blob per layer, and the merged file tree goes into an image bootstrap.
DIR is a filesystem store; DIR/${IMAGE_JSON} describes the image for 'skiff inspect' and 'skiff extract'.
A layer already converted in DIR with the same parameters is reused.

Options:
  --out DIR            output directory (required)
  --platform OS/ARCH   platform to pick from a multi-platform index (default linux/amd64)
  --chunk-size SIZE    chunk size, a power of two from 64k to 16m (default 1m)
  --codec CODEC        per-chunk codec: none or deflate-raw (default none)
  -h, --help           show this help`;

/**
 * How often a conversion collects garbage when it can (collectWhileConverting). One that encodes
 * chunks (deflate-raw) collects twice as often: its encoder threads' megabytes come on top of the
 * converting thread's, and this keeps its peak about 8 MiB lower for about 4 % more time.
 */
const COLLECT_MS = 200;
const COLLECT_MS_ENCODING = 100;

/**
 * A full garbage collection every `everyMs` while converting, where the runtime gives a way to
 * start one (tuneForConversion). The converter's megabyte pieces (reads, decompressed output) that
 * outlived a young-generation collection are freed only by a full one, and V8 starts those by how
 * much memory outside its heap grew since the last: tens of megabytes of dead pieces, a fifth of
 * the peak RSS (docs/benchmarks.md, "Converting layers"). A collection of a heap this small takes
 * milliseconds.
 */
function collectWhileConverting(gc: (() => void) | undefined, everyMs: number): () => void {
  if (!gc) return () => {};
  const timer = setInterval(gc, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}

export async function convertCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    { out: { type: "string" }, platform: { type: "string" }, "chunk-size": { type: "string" }, codec: { type: "string" } },
    true,
  );
  if (values.help) {
    console.log(convertHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected one image reference (see --help)");
  if (!values.out) throw new UsageError("--out DIR is required");
  const params: ConvertParams = { ...DEFAULT_PARAMS };
  try {
    if (values["chunk-size"]) params.chunkShift = parseChunkSize(values["chunk-size"]);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.codec) {
    const codec = CHUNK_CODECS.find((c) => c === values.codec);
    if (!codec) throw new UsageError(`unknown codec ${JSON.stringify(values.codec)} (${CHUNK_CODECS.join(", ")})`);
    params.codec = codec;
  }

  const source = await openLayout(positionals[0]!);
  const platform = values.platform ?? "linux/amd64";
  const image = await resolveImage(source, platform);
  // A zstd layer is decoded on a worker thread where node:zlib has no zstd (Node before 22.15).
  // Started here, the worker boots (about 0.1 s) while the converter's modules load (about 40 ms),
  // not after them, with the converting thread waiting for its first output: the Debian zstd layer
  // converted about 1.5 % sooner (docs/benchmarks.md, "Converting layers").
  const unzstd = nodeUnzstd();
  if (image.layers.some((l) => compressionForMediaType(l.mediaType) === "zstd")) unzstd.prepare?.();
  const [{ convertImage }, { nodeChunkEncoder }, { nodeGunzip }, { FsStore }, { tuneForConversion }] = await Promise.all([
    import("../convert/image.ts"),
    import("../runtime/node-chunk-encoder.ts"),
    import("../runtime/node-gunzip.ts"),
    import("../store/fs.ts"),
    import("../runtime/node-conversion-settings.ts"),
  ]);
  const gc = tuneForConversion();
  const store = await new FsStore(values.out).init();
  const progress = new Progress();
  let layerIndex = 0;
  let layerCount = 0;
  let layerSize = 0;
  let layerRead = 0;
  const started = Date.now();
  const stopCollecting = collectWhileConverting(gc, params.codec === "none" ? COLLECT_MS : COLLECT_MS_ENCODING);
  const result = await convertImage(source, {
    store,
    hasher: nodeHasher,
    gunzip: nodeGunzip,
    unzstd,
    chunkEncoder: nodeChunkEncoder(),
    params,
    platform,
    image,
    onLayer: (i, layer) => {
      layerIndex = i;
      layerSize = layer.size;
      layerRead = 0;
      progress.update(`layer ${i + 1} ${bar(0)}`, true);
    },
    onBytes: (n) => {
      layerRead += n;
      progress.update(`layer ${layerIndex + 1} ${bar(layerSize ? layerRead / layerSize : 0)} ${formatBytes(layerRead)} of ${formatBytes(layerSize)}`);
    },
  }).finally(stopCollecting);
  layerCount = result.layers.length;
  progress.done();

  const description: ImageJson = {
    reference: source.describe,
    manifest: result.image.manifestDigest.value,
    platform: result.image.platform,
    params: paramsId(params),
    bootstrap: result.bootstrapKey,
    layers: result.layers.map((l, i) => ({ digest: result.image.layers[i]!.digest.value, data: l.dataKey, bootstrap: l.bootstrapKey })),
  };
  await writeFile(join(values.out, IMAGE_JSON), JSON.stringify(description, null, 2) + "\n");

  const converted = result.layers.filter((l) => l.converted);
  const sum = (f: (s: NonNullable<(typeof converted)[number]["stats"]>) => number) => converted.reduce((n, l) => n + f(l.stats!), 0);
  const skipped = [...converted.map((l) => l.stats!.skipped), result.skipped];
  const skippedCount = skipped.reduce((n, s) => n + s.count, 0);
  const someSkipped = skipped.flatMap((s) => s.kept).slice(0, 10);
  const lines = [
    `converted ${source.describe} (${result.image.platform}) into ${values.out} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    `  layers     ${layerCount} (${converted.length} converted, ${layerCount - converted.length} already in ${values.out})`,
    `  entries    ${sum((s) => s.entries)} (${sum((s) => s.files)} regular files) in converted layers; ${result.bootstrap.inodeCount} inodes in the image`,
    `  chunks     ${sum((s) => s.chunks)} (${sum((s) => s.uniqueChunks)} unique) of up to ${formatBytes(2 ** params.chunkShift)}, codec ${params.codec}`,
    `  bytes      ${formatBytes(sum((s) => s.bytesIn))} read, ${formatBytes(sum((s) => s.bytesContent))} of file content, ${formatBytes(sum((s) => s.bytesStored))} stored, ${formatBytes(sum((s) => s.bytesDeduplicated))} deduplicated`,
    `  bootstrap  ${formatBytes(result.bootstrap.bytes.byteLength)} (${result.bootstrapKey})`,
  ];
  if (skippedCount) {
    lines.push(`  skipped    ${skippedCount} entries:`);
    for (const s of someSkipped) lines.push(`             ${s.path}: ${s.reason}`);
    if (skippedCount > someSkipped.length) lines.push(`             … and ${skippedCount - someSkipped.length} more`);
  }
  console.log(lines.join("\n"));
  return 0;
}
