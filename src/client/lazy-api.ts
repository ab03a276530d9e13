// The client side of the lazy API (src/http/lazy.ts, docs/api.md), for `skiff inspect <url>` and the
// node agent alike: the URLs of a bootstrap, a layer's data blob and a chunk, fetching an image
// bootstrap with every check a client owes a proxy it does not trust, and learned prefetch (reporting
// what a container read first, fetching the merged list). Web-standard APIs only.
import { codecFromId, type ChunkCodec } from "../format/chunk-codec.ts";
import { Bootstrap, BootstrapError } from "../format/decode.ts";
import { BOOTSTRAP_MEDIA_TYPE } from "../format/layout.ts";
import { parseParamsId } from "../format/params.ts";
import { digestsThatFit, formatPrefetchList, MAX_REPORT_BYTES, MAX_REPORT_DIGESTS, parsePrefetchList, PREFETCH_LIST_TYPE } from "../format/prefetch-list.ts";
import { hashBytes, toHex, type HasherFactory } from "../hash/hasher.ts";
import { errorMessage } from "../util/error-message.ts";
import { parseRetryAfter } from "../util/retry-after.ts";
import { sleep } from "../util/sleep.ts";
import { concatBytes, readPrefix } from "../util/streams.ts";

/**
 * The subset of `fetch` the client uses; the agent passes its keep-alive client (proxy-http.ts). A
 * body only on reportReads' POST. Any fetch Response is a FetchResponse.
 */
export type FetchLike = (url: string, init: { method: string; headers: Record<string, string>; signal: AbortSignal; body?: string }) => Promise<FetchResponse>;

/** What the client reads of a response. */
export interface FetchResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  readonly body: ReadableStream<Uint8Array> | null;
}

/** Why the lazy API gave no bootstrap, on one line. */
export class LazyApiError extends Error {
  override name = "LazyApiError";
  constructor(
    message: string,
    /** The timeout ran out (while the proxy converted, or while retrying). */
    readonly timedOut = false,
  ) {
    super(message.replace(/\s+/g, " ").trim());
  }
}

/** Query parameters of the bootstrap route; the proxy's defaults when absent. */
export interface BootstrapQuery {
  /** `os/arch[/variant]` */
  platform?: string;
  /** e.g. `64k` */
  chunkSize?: string;
  /** `none` or `deflate-raw` */
  codec?: string;
  /** The registry the repository is on, for a proxy that mirrors several (containerd's `?ns=`). */
  ns?: string;
}

const base = (proxy: string) => proxy.replace(/\/+$/, "");
const nsQuery = (ns: string | undefined) => (ns === undefined ? "" : `?ns=${encodeURIComponent(ns)}`);

/** `reference` is a tag or a digest (a leading `@` is dropped). */
export function bootstrapUrl(proxy: string, name: string, reference: string, q: BootstrapQuery = {}): string {
  const query = new URLSearchParams();
  if (q.platform !== undefined) query.set("platform", q.platform);
  if (q.chunkSize !== undefined) query.set("chunk-size", q.chunkSize);
  if (q.codec !== undefined) query.set("codec", q.codec);
  if (q.ns !== undefined) query.set("ns", q.ns);
  const ref = reference.startsWith("@") ? reference.slice(1) : reference;
  return `${base(proxy)}/v2/${name}/_skiff/bootstrap/${ref}${query.size > 0 ? `?${query}` : ""}`;
}

/** A converted layer's data blob, read by range; `params` is a `Skiff-Params` value. */
export function layerDataUrl(proxy: string, name: string, layerDigest: string, params: string, ns?: string): string {
  return `${base(proxy)}/v2/${name}/_skiff/layers/${layerDigest}/${params}/data${nsQuery(ns)}`;
}

/** A converted layer's own bootstrap; the proxy serves it once the layer is converted with `params`. */
export function layerBootstrapUrl(proxy: string, name: string, layerDigest: string, params: string, ns?: string): string {
  return `${base(proxy)}/v2/${name}/_skiff/layers/${layerDigest}/${params}/bootstrap${nsQuery(ns)}`;
}

/** One chunk as stored: `form` is the codec when the chunk record is compressed, else `none`. */
export function chunkUrl(proxy: string, name: string, layerDigest: string, params: string, hex: string, form: ChunkCodec, ns?: string): string {
  return `${base(proxy)}/v2/${name}/_skiff/layers/${layerDigest}/${params}/chunks/${hex}.${form}${nsQuery(ns)}`;
}

export interface FetchBootstrapOptions extends BootstrapQuery {
  /** Give up (202s and retries included) after this long. */
  timeoutMs: number;
  /**
   * Retry network errors and 5xx answers with backoff until the timeout, as a mount does: the proxy
   * may be restarting. Otherwise they fail at once.
   */
  retryFailures?: boolean;
  /** Called about once a second while the proxy converts (202), with the seconds since the start. */
  onWait?: (seconds: number) => void;
  fetchImpl?: FetchLike;
  /** Hashes the bootstrap for its digest check; crypto.subtle when absent. */
  hasher?: HasherFactory;
}

export interface FetchedBootstrap {
  bootstrap: Bootstrap;
  /** `sha256:` of the bootstrap bytes. */
  digest: string;
  /** The platform manifest the bootstrap was built from: what a mount pins. */
  manifestDigest: string;
  /** `Skiff-Params`, the `<params>` segment of the layer URLs. */
  params: string;
}

// About 150 bytes a file: 256 MiB is well over a million files, past any real image. A larger or
// endless body from a broken or malicious proxy is refused as it arrives, not buffered.
export const MAX_BOOTSTRAP_BYTES = 256 * 2 ** 20;

const DIGEST = /^sha256:[0-9a-f]{64}$/;
// Bounds on the wait between polls whatever Retry-After says (5 s when it says nothing usable).
const MIN_POLL_MS = 500;
const MAX_POLL_MS = 60_000;
const DEFAULT_POLL_MS = 5_000;
// A backstop next to the timeout: every attempt waits at least 100 ms, so this is never reached first
// by anything but a proxy failing instantly for a long timeout.
const MAX_ATTEMPTS = 10_000;
const backoffMs = (failures: number) => Math.min(2_000, 100 * 2 ** failures);

/**
 * The image bootstrap of `name` at `reference` (a tag or a digest), waiting while the proxy converts
 * (202 + Retry-After), checked against Docker-Content-Digest and Skiff-Params and decoded.
 * Rejects with a LazyApiError.
 */
export async function fetchBootstrap(proxy: string, name: string, reference: string, options: FetchBootstrapOptions): Promise<FetchedBootstrap> {
  const url = bootstrapUrl(proxy, name, reference, options);
  const fetchImpl: FetchLike = options.fetchImpl ?? ((u, init) => fetch(u, init));
  const signal = AbortSignal.timeout(options.timeoutMs);
  const started = Date.now();
  let failures = 0;
  let lastFailure = "";
  const retry = async (why: string) => {
    lastFailure = why;
    await sleep(backoffMs(failures++), signal);
  };
  try {
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let res: FetchResponse;
      try {
        res = await fetchImpl(url, { method: "GET", headers: { accept: BOOTSTRAP_MEDIA_TYPE }, signal });
      } catch (err) {
        if (signal.aborted || !options.retryFailures) throw err;
        await retry(errorMessage(err));
        continue;
      }
      if (res.status === 202) {
        await res.body?.cancel().catch(() => undefined);
        failures = 0;
        const ms = parseRetryAfter(res.headers.get("retry-after")) ?? DEFAULT_POLL_MS;
        await waitOut(Math.max(MIN_POLL_MS, Math.min(MAX_POLL_MS, ms)), signal, started, options.onWait);
        continue;
      }
      if (res.status !== 200) {
        const why = await failureMessage(res, url);
        if (res.status >= 500 && options.retryFailures) {
          await retry(why);
          continue;
        }
        throw new LazyApiError(why);
      }
      return await checked(url, res.headers, await readBody(res, url), options.hasher);
    }
  } catch (err) {
    if (err instanceof LazyApiError) throw err;
    if (signal.aborted) throw new LazyApiError(`GET ${url}: no bootstrap within ${options.timeoutMs} ms${lastFailure && ` (last: ${lastFailure})`}`, true);
    throw new LazyApiError(`GET ${url}: ${errorMessage(err)}`);
  }
  throw new LazyApiError(`GET ${url}: no bootstrap after ${MAX_ATTEMPTS} attempts${lastFailure && ` (last: ${lastFailure})`}`);
}

/** Sleeps `ms` in steps of at most a second, reporting the wait so far before each. */
async function waitOut(ms: number, signal: AbortSignal, started: number, onWait?: (seconds: number) => void): Promise<void> {
  const until = Date.now() + ms;
  for (let now = Date.now(); now < until; now = Date.now()) {
    onWait?.(Math.round((now - started) / 1000));
    await sleep(Math.min(1000, until - now), signal);
  }
}

/** An OCI error body as `CODE: message`, or the status; the body is read only as far as 64 KiB. */
async function failureMessage(res: FetchResponse, url: string, method = "GET"): Promise<string> {
  try {
    const text = res.body ? new TextDecoder().decode(await readPrefix(res.body, 64 * 1024)) : "";
    const first = (JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] }).errors?.[0];
    if (first && typeof first.code === "string") return `${first.code}: ${typeof first.message === "string" ? first.message : ""}`.slice(0, 2000);
  } catch {
    // not an OCI error body, or it broke off
  }
  return `${method} ${url}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
}

/** The whole body, refused once its Content-Length or its bytes so far pass `max`. */
async function readBody(res: FetchResponse, url: string, max = MAX_BOOTSTRAP_BYTES, what = "bootstrap"): Promise<Uint8Array<ArrayBuffer>> {
  const announced = Number(res.headers.get("content-length"));
  if (announced > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new LazyApiError(`GET ${url}: a ${what} of ${announced} bytes is larger than the agent accepts (${max})`);
  }
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let length = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.length;
      if (length > max) throw new LazyApiError(`GET ${url}: the ${what} is larger than the agent accepts (${max} bytes)`);
      parts.push(value);
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
  return concatBytes(parts);
}

async function checked(url: string, headers: FetchResponse["headers"], body: Uint8Array<ArrayBuffer>, hasher?: HasherFactory): Promise<FetchedBootstrap> {
  const fail = (why: string) => new LazyApiError(`GET ${url}: ${why}`);
  const digest = await checkedDigest(fail, headers, body, hasher);
  const manifestDigest = headers.get("skiff-manifest-digest") ?? "";
  if (!DIGEST.test(manifestDigest)) throw fail(`missing or malformed Skiff-Manifest-Digest ${JSON.stringify(manifestDigest)}`);
  const params = headers.get("skiff-params") ?? "";
  if (!parseParamsId(params)) throw fail(`unknown Skiff-Params ${JSON.stringify(params)}`);
  const bootstrap = decodeWithParams(fail, body, params);
  if (bootstrap.kind !== "image") throw fail(`a ${bootstrap.kind} bootstrap, expected an image`);
  return { bootstrap, digest, manifestDigest, params };
}

/** Docker-Content-Digest, checked against the body. */
async function checkedDigest(fail: (why: string) => LazyApiError, headers: FetchResponse["headers"], body: Uint8Array<ArrayBuffer>, hasher?: HasherFactory): Promise<string> {
  const digest = headers.get("docker-content-digest") ?? "";
  if (!DIGEST.test(digest)) throw fail(`missing or malformed Docker-Content-Digest ${JSON.stringify(digest)}`);
  const hex = hasher ? hashBytes(hasher, "sha256", body) : toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", body)));
  if (`sha256:${hex}` !== digest) throw fail(`body does not match Docker-Content-Digest ${digest}`);
  return digest;
}

/** The bootstrap in `body`, whose chunk size and codec must be those `params` (a Skiff-Params value) names. */
function decodeWithParams(fail: (why: string) => LazyApiError, body: Uint8Array, params: string): Bootstrap {
  let bootstrap: Bootstrap;
  try {
    bootstrap = Bootstrap.decode(body);
  } catch (err) {
    if (err instanceof BootstrapError) throw fail(err.message);
    throw err;
  }
  const parsed = parseParamsId(params);
  if (!parsed || bootstrap.chunkShift !== parsed.chunkShift || codecFromId(bootstrap.codec) !== parsed.codec) {
    throw fail(`bootstrap parameters do not match Skiff-Params ${params}`);
  }
  return bootstrap;
}

export interface FetchLayerBootstrapOptions {
  timeoutMs: number;
  /**
   * The layer's data blob digest (hex) as the image bootstrap records it: ties the two conversions
   * together. Null only for a request made before the image bootstrap is in, whose caller checks
   * the answer's blob against that record itself.
   */
  dataDigest: string | null;
  /** As in BootstrapQuery. */
  ns?: string;
  fetchImpl?: FetchLike;
  /** As in FetchBootstrapOptions. */
  hasher?: HasherFactory;
}

/**
 * One layer's bootstrap, of the conversion an image bootstrap already named (fetch that first: this
 * route never starts a conversion). Checked against Docker-Content-Digest, the layer digest, the
 * data digest and the params. Rejects with a LazyApiError.
 */
export async function fetchLayerBootstrap(proxy: string, name: string, layerDigest: string, params: string, options: FetchLayerBootstrapOptions): Promise<Bootstrap> {
  if (!DIGEST.test(layerDigest)) throw new LazyApiError(`invalid layer digest ${JSON.stringify(layerDigest.slice(0, 100))}`);
  const url = layerBootstrapUrl(proxy, name, layerDigest, params, options.ns);
  const fetchImpl: FetchLike = options.fetchImpl ?? ((u, init) => fetch(u, init));
  const fail = (why: string) => new LazyApiError(`GET ${url}: ${why}`);
  try {
    const res = await fetchImpl(url, { method: "GET", headers: { accept: BOOTSTRAP_MEDIA_TYPE }, signal: AbortSignal.timeout(options.timeoutMs) });
    if (res.status !== 200) throw new LazyApiError(await failureMessage(res, url));
    const body = await readBody(res, url);
    await checkedDigest(fail, res.headers, body, options.hasher);
    const bootstrap = decodeWithParams(fail, body, params);
    if (bootstrap.kind !== "layer" || bootstrap.blobCount !== 1) throw fail(`a ${bootstrap.kind} bootstrap of ${bootstrap.blobCount} blobs, expected one layer`);
    const blob = bootstrap.blob(0);
    if (blob.layerDigest !== layerDigest) throw fail(`the bootstrap is of layer ${blob.layerDigest}`);
    if (options.dataDigest !== null && toHex(blob.dataDigest) !== options.dataDigest) throw fail("the bootstrap is not of the conversion the image bootstrap names");
    return bootstrap;
  } catch (err) {
    if (err instanceof LazyApiError) throw err;
    throw fail(errorMessage(err));
  }
}

// ---- learned prefetch ----------------------------------------------------------------------------

/** Where nodes report an image's first reads and fetch the merged list (`manifestDigest`: a bootstrap's Skiff-Manifest-Digest; `params`: its Skiff-Params). */
export function learnedReadsUrl(proxy: string, name: string, manifestDigest: string, params: string, ns?: string): string {
  return `${base(proxy)}/v2/${name}/_skiff/images/${manifestDigest}/${params}/reads${nsQuery(ns)}`;
}

export interface LearnedReadsOptions {
  /** As in BootstrapQuery. */
  ns?: string;
  fetchImpl?: FetchLike;
  /** Give up after this long (default 30 s). */
  timeoutMs?: number;
}

const LEARNED_TIMEOUT_MS = 30_000;
// A merged list holds at most MAX_REPORT_DIGESTS digests: a little over 4 MiB. Twice the report
// limit leaves room for comments, and refuses an endless body as it arrives.
const MAX_LEARNED_LIST_BYTES = 2 * MAX_REPORT_BYTES;
const HEX_DIGEST = /^[0-9a-f]{64}$/;

/**
 * The merged list of chunks the image's containers read first (lowercase sha256 hex, best first), or
 * null when the proxy has learned nothing yet or has learned prefetch switched off (404). Rejects
 * with a LazyApiError.
 */
export async function fetchLearnedReads(proxy: string, name: string, manifestDigest: string, params: string, options: LearnedReadsOptions = {}): Promise<string[] | null> {
  const url = learnedReadsUrl(proxy, name, manifestDigest, params, options.ns);
  return learnedRequest("GET", url, options, undefined, async (res) => {
    if (res.status === 404) {
      await res.body?.cancel().catch(() => undefined);
      return null;
    }
    if (res.status !== 200) throw new LazyApiError(await failureMessage(res, url));
    const bytes = await readBody(res, url, MAX_LEARNED_LIST_BYTES, "list");
    try {
      return parsePrefetchList(new TextDecoder().decode(bytes), MAX_REPORT_DIGESTS);
    } catch (err) {
      throw new LazyApiError(`GET ${url}: ${errorMessage(err)}`);
    }
  });
}

/**
 * Reports the chunks a container read first (lowercase sha256 hex, in first-read order) for the
 * proxy to merge. As many of the first digests as fit the proxy's limits are sent (65,536 digests,
 * 4 MiB). Rejects with a LazyApiError, also for a digest that is not lowercase sha256 hex.
 */
export async function reportReads(proxy: string, name: string, manifestDigest: string, params: string, hexDigests: readonly string[], options: LearnedReadsOptions = {}): Promise<void> {
  const url = learnedReadsUrl(proxy, name, manifestDigest, params, options.ns);
  const bad = hexDigests.find((d) => !HEX_DIGEST.test(d));
  if (bad !== undefined) throw new LazyApiError(`POST ${url}: not a lowercase sha256 hex digest: ${JSON.stringify(bad.slice(0, 80))}`);
  const body = formatPrefetchList(hexDigests.slice(0, digestsThatFit(hexDigests.length)));
  await learnedRequest("POST", url, options, body, async (res) => {
    if (res.status < 200 || res.status >= 300) throw new LazyApiError(await failureMessage(res, url, "POST"));
    await res.body?.cancel().catch(() => undefined);
  });
}

/** One request of the learned-prefetch route, its failures as LazyApiErrors. */
async function learnedRequest<T>(method: string, url: string, options: LearnedReadsOptions, body: string | undefined, answer: (res: FetchResponse) => Promise<T>): Promise<T> {
  const fetchImpl: FetchLike = options.fetchImpl ?? ((u, init) => fetch(u, init));
  const headers: Record<string, string> = body === undefined ? { accept: "text/plain" } : { "content-type": PREFETCH_LIST_TYPE };
  try {
    return await answer(await fetchImpl(url, { method, headers, signal: AbortSignal.timeout(options.timeoutMs ?? LEARNED_TIMEOUT_MS), ...(body === undefined ? {} : { body }) }));
  } catch (err) {
    if (err instanceof LazyApiError) throw err;
    throw new LazyApiError(`${method} ${url}: ${errorMessage(err)}`);
  }
}
