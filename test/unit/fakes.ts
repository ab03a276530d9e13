// Test doubles for the in-process suites: a fake OCI registry reachable through an injected fetch,
// a tiny node:http listener on loopback that counts connections, and body readers that report
// (rather than hide) a stream that errors or ends short.
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolveConfig } from "../../src/config/config.ts";
import { startNodeServer, type RunningServer } from "../../src/runtime/node.ts";
import { concatBytes as concat } from "../../src/util/streams.ts";
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/** Deterministic pseudo-random bytes (no Math.random, so failures reproduce). */
export function bytesOf(length: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A body stream that hands out `data` in chunks of `chunk` bytes. */
export function chunkedStream(data: Uint8Array, chunk = 1000): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= data.byteLength) {
        controller.close();
        return;
      }
      controller.enqueue(data.slice(at, at + chunk));
      at += chunk;
    },
  });
}

export interface BodyResult {
  bytes: Uint8Array;
  /** Set when reading rejected. */
  error: unknown;
  /** True only when the stream ended cleanly. */
  clean: boolean;
}

/** Reads a body to its end or its error, bounded in chunks. */
export async function readBody(body: ReadableStream<Uint8Array> | null): Promise<BodyResult> {
  if (!body) return { bytes: new Uint8Array(0), error: undefined, clean: true };
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let error: unknown;
  try {
    for (let i = 0; i < 1_000_000; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
  } catch (err) {
    error = err;
  }
  return { bytes: concat(parts), error, clean: error === undefined };
}

export { concat };

export interface RecordedRequest {
  method: string;
  url: URL;
  headers: Headers;
}

type Override = (req: RecordedRequest) => Response | undefined | Promise<Response | undefined>;

interface FakeManifest {
  body: Uint8Array<ArrayBuffer>;
  mediaType: string;
  digest: string;
}

/**
 * A fake distribution registry behind an injected `fetch`: blobs and manifests per repository,
 * every request recorded, and hooks to make it misbehave (`override`, `down`).
 */
export class FakeRegistry {
  readonly origin: string;
  readonly requests: RecordedRequest[] = [];
  /** When set, every fetch rejects as a refused connection would. */
  down = false;
  /** Consulted first; return a Response to answer instead of the registry. */
  override: Override | undefined;
  /** Size of the chunks blob bodies are streamed in. */
  chunkSize = 1000;
  readonly #blobs = new Map<string, Uint8Array<ArrayBuffer>>();
  readonly #manifests = new Map<string, FakeManifest>();

  constructor(origin = "http://upstream.test") {
    this.origin = origin;
  }

  addBlob(repos: string[], data: Uint8Array<ArrayBuffer>): string {
    const digest = sha256(data);
    for (const repo of repos) this.#blobs.set(`${repo}@${digest}`, data);
    return digest;
  }

  /** An image of gzipped `layers` (an amd64 config, an OCI manifest) tagged `tag` in `repo`; the layers' digests. */
  addImage(repo: string, tag: string, layers: Uint8Array<ArrayBuffer>[]): string[] {
    const digests = layers.map((l) => this.addBlob([repo], l));
    const config = this.addBlob([repo], new TextEncoder().encode(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } })));
    this.addManifest(
      repo,
      tag,
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: config, size: 0 },
        layers: layers.map((l, i) => ({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: digests[i], size: l.byteLength })),
      }),
    );
    return digests;
  }

  removeBlob(repo: string, digest: string): void {
    this.#blobs.delete(`${repo}@${digest}`);
  }

  addManifest(repo: string, tag: string | null, body: string, mediaType = "application/vnd.oci.image.manifest.v1+json"): string {
    const bytes = new TextEncoder().encode(body);
    const digest = sha256(bytes);
    const m = { body: bytes, mediaType, digest };
    this.#manifests.set(`${repo}@${digest}`, m);
    if (tag) this.#manifests.set(`${repo}:${tag}`, m);
    return digest;
  }

  /** Requests whose path contains `fragment` (and, when given, with that method). */
  count(fragment: string, method?: string): number {
    return this.requests.filter((r) => r.url.pathname.includes(fragment) && (!method || r.method === method)).length;
  }

  readonly fetch = (async (input: URL | RequestInfo, init?: RequestInit): Promise<Response> => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const req: RecordedRequest = { method: init?.method ?? "GET", url, headers: new Headers(init?.headers) };
    this.requests.push(req);
    if (this.down) throw new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) });
    const overridden = await this.override?.(req);
    if (overridden) return overridden;
    return this.#answer(req);
  }) as typeof fetch;

  #answer(req: RecordedRequest): Response {
    const m = /^\/v2\/(.+)\/(blobs|manifests)\/([^/]+)$/.exec(req.url.pathname);
    const head = req.method === "HEAD";
    if (!m) return json(404, { errors: [{ code: "NAME_UNKNOWN", message: "no route" }] });
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (kind === "blobs") {
      const data = this.#blobs.get(`${repo}@${ref}`);
      if (!data) return json(404, { errors: [{ code: "BLOB_UNKNOWN", message: "blob unknown to registry" }] }, head);
      const headers = { "Content-Length": String(data.byteLength), "Content-Type": "application/octet-stream", "Docker-Content-Digest": ref };
      return new Response(head ? null : chunkedStream(data, this.chunkSize), { status: 200, headers });
    }
    const sep = ref.includes(":") ? "@" : ":";
    const manifest = this.#manifests.get(`${repo}${sep}${ref}`);
    if (!manifest) return json(404, { errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }, head);
    const headers = { "Content-Length": String(manifest.body.byteLength), "Content-Type": manifest.mediaType, "Docker-Content-Digest": manifest.digest };
    return new Response(head ? null : manifest.body.slice(), { status: 200, headers });
  }
}

export function json(status: number, value: unknown, head = false, headers: Record<string, string> = {}): Response {
  const body = JSON.stringify(value);
  return new Response(head ? null : body, { status, headers: { "Content-Type": "application/json", ...headers } });
}

export interface Listener {
  url: string;
  /** host:port as it appears in a URL. */
  host: string;
  port: number;
  /** TCP connections accepted so far. */
  connections(): number;
  requests: { method: string; url: string; headers: IncomingMessage["headers"] }[];
  close(): Promise<void>;
}

/** A node:http server on loopback (port 0) that counts connections and records requests. */
export async function listen(
  handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.statusCode = 500;
    res.end("unexpected");
  },
  hostname = "127.0.0.1",
): Promise<Listener> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const requests: Listener["requests"] = [];
  const server: Server = createServer((req, res) => {
    requests.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    handler(req, res);
  });
  server.on("connection", (socket: Socket) => {
    connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, hostname, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${hostname}:${port}`,
    host: `${hostname}:${port}`,
    port,
    connections: () => connections,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** One fetch for several fake registries, each answering the requests for its own origin. */
export function dispatchByOrigin(...registries: FakeRegistry[]): typeof fetch {
  return ((input: URL | RequestInfo, init?: RequestInit) => {
    const origin = new URL(input instanceof Request ? input.url : String(input)).origin;
    const target = registries.find((r) => r.origin === origin);
    if (!target) return Promise.reject(new TypeError(`unexpected host ${origin}`));
    return target.fetch(input, init);
  }) as typeof fetch;
}

/** A FakeRegistry served over node:http on loopback, for tests that need a real upstream socket. */
export function serveFakeRegistry(registry: FakeRegistry): Promise<Listener> {
  return listen(async (req, res) => {
    const answer = await registry.fetch(new URL(req.url ?? "/", registry.origin), { method: req.method });
    res.writeHead(answer.status, Object.fromEntries(answer.headers));
    res.end(Buffer.from(await answer.arrayBuffer()));
  });
}

/**
 * The Node entry over a temp store, in front of a FakeRegistry on loopback (upstream `up`) that holds
 * `blob` in team/app: the server, the blob's URL through it, and a close() that stops and removes all
 * of it. `access` is the config's access section, when the test needs one.
 */
export async function nodeSkiffWithBlob(blob: Uint8Array<ArrayBuffer>, access?: object): Promise<{ server: RunningServer; url: string; close(): Promise<void> }> {
  const upstream = new FakeRegistry();
  const digest = upstream.addBlob(["team/app"], blob);
  const up = await serveFakeRegistry(upstream);
  const dataDir = await mkdtemp(join(tmpdir(), "skiff-node-"));
  const config = resolveConfig({ upstreams: { up: { url: up.url } }, ...(access ? { access } : {}) }, {});
  const skiff = await startNodeServer({ config, host: "127.0.0.1", port: 0, dataDir });
  return {
    server: skiff,
    url: `${skiff.url}/v2/up/team/app/blobs/${digest}`,
    close: async () => {
      await skiff.close();
      await up.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** One GET with header fields exactly as given (repeats kept, Node's own checks bypassed), on its own connection. */
export function rawGet(url: string, headers: string[]): Promise<{ status: number; headers: IncomingMessage["headers"]; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: ["Host", new URL(url).host, ...headers], agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (d: Buffer) => parts.push(d));
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}
