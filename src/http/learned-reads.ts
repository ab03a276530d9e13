// The learned-prefetch route of the lazy API (docs/api.md, "Learned prefetch"):
//   POST /v2/<name>/_skiff/images/<manifest digest>/<params>/reads   a node's report, 204
//   GET  /v2/<name>/_skiff/images/<manifest digest>/<params>/reads   the merged list, 200 (404: none yet)
// Both in the prefetch list text format (src/format/prefetch-list.ts). Access was decided before
// (registry.ts): whoever may pull the repository may report and read. A report is taken only for an
// image converted with those params, and only the digests of that image's chunks are kept.
import type { Context } from "hono";
import { MANIFEST_MEDIA_TYPES, type ManifestCache } from "../cache/manifests.ts";
import { parseParamsId } from "../format/params.ts";
import { MAX_REPORT_BYTES, MAX_REPORT_DIGESTS, formatPrefetchList, parsePrefetchList, PrefetchListError, PREFETCH_LIST_TYPE } from "../format/prefetch-list.ts";
import { hashBytes, type HasherFactory } from "../hash/hasher.ts";
import type { Conversions } from "../lazy/conversions.ts";
import { reportedChunks, type LearnedImage, type LearnedReads } from "../lazy/learned-reads.ts";
import { OciError } from "../oci/errors.ts";
import { parseDigest } from "../oci/reference.ts";
import type { Metrics } from "../util/metrics.ts";
import { readAll, StreamTooLarge } from "../util/streams.ts";
import { etagListMatches } from "./ranged.ts";
import type { CacheScope } from "./registry.ts";

export interface LearnedReadsDeps {
  learned: LearnedReads;
  /** Off: the route answers 404 as if it did not exist. */
  enabled: boolean;
  conversions: Conversions;
  manifests: ManifestCache;
  hasher: HasherFactory;
  metrics: Metrics;
  /** Labels a converted manifest whose config names no platform, as the bootstrap route does. */
  defaultPlatform: string;
}

export function learnedReadsRoute(deps: LearnedReadsDeps) {
  return async function handle(c: Context, name: string, manifestRef: string, paramsRef: string, cacheScope: CacheScope): Promise<Response> {
    if (!deps.enabled) throw new OciError("NAME_UNKNOWN", "learned prefetch is switched off on this proxy", { status: 404 });
    const manifest = parseDigest(manifestRef);
    if (!manifest) throw new OciError("DIGEST_INVALID", `invalid manifest digest ${JSON.stringify(manifestRef.slice(0, 200))}`);
    if (!parseParamsId(paramsRef)) throw new OciError("NAME_UNKNOWN", `unknown conversion parameters ${JSON.stringify(paramsRef.slice(0, 100))}`, { status: 404 });
    const image: LearnedImage = { repository: name, manifest, params: paramsRef };
    const method = c.req.method;
    if (method === "POST") return report(c, image);
    if (method === "GET" || method === "HEAD") return list(c, image, cacheScope);
    throw new OciError("UNSUPPORTED", `${method} is not supported here`, { headers: { Allow: "GET, HEAD, POST" } });
  };

  async function report(c: Context, image: LearnedImage): Promise<Response> {
    const digests = parseReport(await readReport(c.req.raw));
    const root = await deps.manifests.byDigest(image.repository, image.manifest, MANIFEST_MEDIA_TYPES.join(", "));
    const converted = await deps.conversions.stored(image.repository, root, deps.defaultPlatform, parseParamsId(image.params)!);
    if (!converted) throw new OciError("MANIFEST_UNKNOWN", `${image.manifest.value} is not a platform manifest converted with ${image.params} in ${image.repository}: request its bootstrap first`);
    const { chunks, foreign } = reportedChunks(converted.bootstrap, digests);
    if (foreign > 0) deps.metrics.inc("skiff_learned_reads_dropped_total", {}, foreign);
    if (chunks.length === 0) {
      deps.metrics.inc("skiff_learned_reads_reports_total", { result: "refused" });
      throw new OciError("DIGEST_INVALID", `none of the ${digests.length} digests is a chunk of ${image.manifest.value}`);
    }
    await deps.learned.report(image, converted.bootstrap, chunks);
    deps.metrics.inc("skiff_learned_reads_reports_total", { result: "stored" });
    return new Response(null, { status: 204 });
  }

  async function list(c: Context, image: LearnedImage, cacheScope: CacheScope): Promise<Response> {
    const digests = await deps.learned.list(image);
    if (!digests) throw new OciError("MANIFEST_UNKNOWN", `nothing has been learned yet about what ${image.manifest.value} reads first with ${image.params} in ${image.repository}`);
    const body = new TextEncoder().encode(formatPrefetchList(digests));
    const etag = `"sha256:${hashBytes(deps.hasher, "sha256", body)}"`;
    const headers = { "Content-Type": PREFETCH_LIST_TYPE, ETag: etag, "Cache-Control": `${cacheScope}, no-cache` };
    if (etagListMatches(c.req.header("if-none-match") ?? null, etag)) return new Response(null, { status: 304, headers });
    return new Response(c.req.method === "HEAD" ? null : body, { status: 200, headers: { ...headers, "Content-Length": String(body.byteLength) } });
  }
}

function parseReport(text: string): string[] {
  try {
    return parsePrefetchList(text, MAX_REPORT_DIGESTS);
  } catch (err) {
    if (!(err instanceof PrefetchListError)) throw err;
    if (err.tooMany) throw new OciError("SIZE_INVALID", `a report may name at most ${MAX_REPORT_DIGESTS} digests`, { status: 413 });
    throw new OciError("UNSUPPORTED", `the report is not a skiff prefetch list: ${err.message}`, { status: 400 });
  }
}

/** The report's text, refused with 413 past MAX_REPORT_BYTES (announced or read so far) and 400 when it is not a list. */
async function readReport(request: Request): Promise<string> {
  const tooLarge = () => new OciError("SIZE_INVALID", `a report may be at most ${MAX_REPORT_BYTES} bytes`, { status: 413 });
  if (Number(request.headers.get("content-length") ?? 0) > MAX_REPORT_BYTES) {
    await request.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  let bytes: Uint8Array;
  try {
    bytes = request.body ? await readAll(request.body, MAX_REPORT_BYTES) : new Uint8Array(0);
  } catch (err) {
    if (err instanceof StreamTooLarge) throw tooLarge();
    throw err;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new OciError("UNSUPPORTED", "the report is not UTF-8 text", { status: 400 });
  }
}
