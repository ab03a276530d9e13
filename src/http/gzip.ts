// gzip for the answers that are worth it: a bootstrap is mostly names and modes, and compresses
// about 2.3× (a 9,000-entry image: 1.10 MB → 0.48 MB), which on a 100 Mbit/s link is 50 ms less
// before a node can mount. Chunks and blobs are never gzipped: they are compressed or incompressible
// already, and are served by byte range.
import { bytesStream } from "../util/streams.ts";

/**
 * How the runtime gzips a body: "stream" compresses it once (GzipCache; Node, Deno); "runtime" only
 * sets Content-Encoding, for a runtime that compresses such a body as it sends it (workerd does,
 * unless told the body is encoded already).
 */
export type GzipBody = "stream" | "runtime";

/** Compresses a whole body as one gzip member. */
export type Gzip = (bytes: Uint8Array) => Promise<Uint8Array<ArrayBuffer>>;

/** Whether an Accept-Encoding header takes gzip: its `gzip` (or `x-gzip`) coding, else its `*`, has a q above 0. */
export function acceptsGzip(header: string | null): boolean {
  if (!header) return false;
  // A coding named outright wins over `*`, which stands only for the codings not named (RFC 9110 12.5.3).
  const weights = new Map<string, number>();
  for (const part of header.split(",")) {
    const [coding, ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    weights.set(coding!.trim(), q === undefined ? 1 : Number(q.slice(2)));
  }
  const q = weights.get("gzip") ?? weights.get("x-gzip") ?? weights.get("*");
  return q !== undefined && q > 0;
}

/**
 * Gzipped bodies kept by key (a bootstrap's digest), least recently used first out: compressing a
 * 1 MB bootstrap costs the edge about 25 ms, which a loopback node would wait for on every mount,
 * and the same bootstrap goes to every node that runs the image. One compression per key at a time.
 */
export class GzipCache {
  readonly #maxBytes: number;
  readonly #gzip: Gzip;
  readonly #entries = new Map<string, Promise<Uint8Array<ArrayBuffer>>>();
  readonly #sizes = new Map<string, number>();
  #bytes = 0;

  /** `gzip`: the runtime's, when faster than CompressionStream (node:zlib on Node). */
  constructor(maxBytes = 64 * 2 ** 20, gzip: Gzip = gzipWithStream) {
    this.#maxBytes = maxBytes;
    this.#gzip = gzip;
  }

  gzip(key: string, bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    const hit = this.#entries.get(key);
    if (hit) {
      this.#entries.delete(key);
      this.#entries.set(key, hit);
      return hit;
    }
    const made = this.#gzip(bytes);
    this.#entries.set(key, made);
    made.then(
      (zipped) => {
        if (this.#entries.get(key) !== made) return;
        this.#sizes.set(key, zipped.byteLength);
        this.#bytes += zipped.byteLength;
        for (const [old] of this.#entries) {
          if (this.#bytes <= this.#maxBytes) break;
          this.#forget(old);
        }
      },
      () => this.#forget(key),
    );
    return made;
  }

  #forget(key: string): void {
    this.#entries.delete(key);
    this.#bytes -= this.#sizes.get(key) ?? 0;
    this.#sizes.delete(key);
  }
}

async function gzipWithStream(bytes: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const stream = bytesStream(bytes) as ReadableStream<Uint8Array<ArrayBuffer>>; // bootstraps are never shared memory
  return new Uint8Array(await new Response(stream.pipeThrough(new CompressionStream("gzip"))).arrayBuffer());
}

/** "stream" compresses each body once and keeps it in `cache`; "runtime" leaves it to the runtime. */
export type GzipOptions = { how: "stream"; cache: GzipCache } | { how: "runtime" };

/**
 * `res` gzipped when the request takes gzip and asks for the whole body (no Range): a full 200 GET
 * answer. Its ETag gets a suffix (an encoded answer is another representation); every answer says
 * it varies by Accept-Encoding, so that a cache in front keeps the two apart. `whole`: the body's
 * bytes and a key for them (its digest), to answer from `o.cache`.
 */
export async function gzipWhenAccepted(req: Request, res: Response, o: GzipOptions, whole: { key: string; bytes: Uint8Array }): Promise<Response> {
  res.headers.append("Vary", "Accept-Encoding");
  if (req.method !== "GET" || res.status !== 200 || !res.body || req.headers.has("range") || !acceptsGzip(req.headers.get("accept-encoding"))) return res;
  const headers = new Headers(res.headers);
  headers.delete("Content-Length");
  headers.set("Content-Encoding", "gzip");
  const etag = headers.get("ETag");
  if (etag?.endsWith('"')) headers.set("ETag", `${etag.slice(0, -1)}+gzip"`);
  if (o.how === "runtime") return new Response(res.body, { status: 200, headers });
  await res.body.cancel();
  const zipped = await o.cache.gzip(whole.key, whole.bytes);
  headers.set("Content-Length", String(zipped.byteLength));
  return new Response(zipped, { status: 200, headers });
}
