// Gets an image's bootstrap from the proxy's lazy API: waits out `202 converting` (bounded by the
// timeout), checks the body against `Docker-Content-Digest`, and decodes it. The manifest digest it
// returns is what a mount pins: the bootstrap in hand stays the mount's tree even if the tag moves.
import { parseParamsId } from "../../src/format/params.ts";
import { codecFromId } from "../../src/format/codec.ts";
import { Bootstrap } from "../../src/format/decode.ts";
import { concatBytes } from "../../src/util/streams.ts";
import { message, type FetchLike } from "./range-request.ts";
import { sha256Hex } from "./sha256-hex.ts";

export interface FetchBootstrapOptions {
  /** `os/arch[/variant]`; the proxy's default when absent. */
  platform?: string;
  /** `chunk-size` query value, e.g. `64k`; the proxy's default (1 MiB) when absent. */
  chunkSize?: string;
  /** `none` or `deflate-raw`; the proxy's default when absent. */
  codec?: string;
  /** Give up (202s and retries included) after this long. */
  timeoutMs: number;
  fetchImpl?: FetchLike;
}

export interface FetchedBootstrap {
  bootstrap: Bootstrap;
  /** `sha256:` of the bootstrap bytes. */
  digest: string;
  /** The platform manifest the bootstrap was built from. */
  manifestDigest: string;
  /** `Skiff-Params`, the `<params>` segment of the layer URLs. */
  params: string;
}

const DIGEST = /^sha256:[0-9a-f]{64}$/;
const MAX_ATTEMPTS = 1_000;
const MAX_RETRY_AFTER_MS = 30_000;
// About 150 bytes a file: 256 MiB is well over a million files, past any real image. A larger or
// endless body from a broken or malicious proxy is refused as it arrives, not buffered.
export const MAX_BOOTSTRAP_BYTES = 256 * 2 ** 20;

/** `reference` is a tag, a digest, or `@digest`. */
export async function fetchBootstrap(proxy: string, name: string, reference: string, options: FetchBootstrapOptions): Promise<FetchedBootstrap> {
  const ref = reference.startsWith("@") ? reference.slice(1) : reference;
  const query = new URLSearchParams();
  if (options.platform !== undefined) query.set("platform", options.platform);
  if (options.chunkSize !== undefined) query.set("chunk-size", options.chunkSize);
  if (options.codec !== undefined) query.set("codec", options.codec);
  const qs = query.size > 0 ? `?${query}` : "";
  const url = `${proxy.replace(/\/+$/, "")}/v2/${name}/_skiff/bootstrap/${ref}${qs}`;
  const fetchImpl: FetchLike = options.fetchImpl ?? ((u, init) => fetch(u, init));
  const signal = AbortSignal.timeout(options.timeoutMs);

  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    let res: Response;
    try {
      res = await fetchImpl(url, { method: "GET", headers: { accept: "application/vnd.skiff.bootstrap.v1" }, signal });
    } catch {
      // Network errors are retried until the timeout: the proxy may be restarting.
      if (signal.aborted) throw timedOut(url, options.timeoutMs);
      await wait(Math.min(2_000, 100 * 2 ** attempt), signal, url, options.timeoutMs);
      continue;
    }
    if (res.status === 202 || res.status >= 500) {
      await res.body?.cancel().catch(() => undefined);
      const retryAfter = Number(res.headers.get("retry-after"));
      const ms = res.status === 202 && Number.isFinite(retryAfter) && retryAfter >= 0 ? Math.min(retryAfter * 1000, MAX_RETRY_AFTER_MS) : Math.min(2_000, 100 * 2 ** attempt);
      await wait(Math.max(ms, 50), signal, url, options.timeoutMs);
      continue;
    }
    let body: Uint8Array;
    try {
      body = await readBody(res, MAX_BOOTSTRAP_BYTES);
    } catch (err) {
      if (signal.aborted) throw timedOut(url, options.timeoutMs);
      throw new Error(`GET ${url}: ${message(err)}`);
    }
    if (res.status !== 200) {
      throw new Error(`GET ${url}: status ${res.status}: ${new TextDecoder().decode(body.subarray(0, 500))}`);
    }
    return checked(url, res.headers, body);
  }
  throw new Error(`GET ${url}: no bootstrap after ${MAX_ATTEMPTS} attempts`);
}

/** The whole body, refused once its Content-Length or its bytes so far pass `max`. */
async function readBody(res: Response, max: number): Promise<Uint8Array> {
  const announced = Number(res.headers.get("content-length"));
  if (announced > max) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`a bootstrap of ${announced} bytes is larger than the agent accepts (${max})`);
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
      if (length > max) throw new Error(`the bootstrap is larger than the agent accepts (${max} bytes)`);
      parts.push(value);
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
  return concatBytes(parts);
}

function checked(url: string, headers: Headers, body: Uint8Array): FetchedBootstrap {
  const digest = headers.get("docker-content-digest") ?? "";
  if (!DIGEST.test(digest)) throw new Error(`GET ${url}: missing or malformed Docker-Content-Digest ${JSON.stringify(digest)}`);
  if (`sha256:${sha256Hex(body)}` !== digest) throw new Error(`GET ${url}: body does not match Docker-Content-Digest ${digest}`);
  const manifestDigest = headers.get("skiff-manifest-digest") ?? "";
  if (!DIGEST.test(manifestDigest)) throw new Error(`GET ${url}: missing or malformed Skiff-Manifest-Digest ${JSON.stringify(manifestDigest)}`);
  const params = headers.get("skiff-params") ?? "";
  const parsed = parseParamsId(params);
  if (!parsed) throw new Error(`GET ${url}: unknown Skiff-Params ${JSON.stringify(params)}`);
  const bootstrap = Bootstrap.decode(body);
  if (bootstrap.kind !== "image") throw new Error(`GET ${url}: a ${bootstrap.kind} bootstrap, expected an image`);
  if (bootstrap.chunkShift !== parsed.chunkShift || codecFromId(bootstrap.codec) !== parsed.codec) {
    throw new Error(`GET ${url}: bootstrap parameters do not match Skiff-Params ${params}`);
  }
  return { bootstrap, digest, manifestDigest, params };
}

function timedOut(url: string, timeoutMs: number): Error {
  return new Error(`GET ${url}: no bootstrap within ${timeoutMs} ms`);
}

function wait(ms: number, signal: AbortSignal, url: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(timedOut(url, timeoutMs));
    const onAbort = () => {
      clearTimeout(timer);
      reject(timedOut(url, timeoutMs));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
