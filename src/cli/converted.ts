// Opens something converted: what `skiff convert` wrote (DIR/image.json, the image bootstrap in
// DIR's store and each layer's data blob), a bootstrap file given directly, or an image on a skiff
// proxy (`http://HOST:PORT/NAME:TAG` or `…/NAME@DIGEST`), whose bootstrap comes from the lazy API.
import { createHash } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Bootstrap, BootstrapError } from "../format/decode.ts";
import { isValidRepositoryName, isValidTag, parseDigest } from "../oci/reference.ts";
import { FsStore } from "../store/fs.ts";
import { assertValidKey, getBytes } from "../store/store.ts";
import { IMAGE_JSON, type ImageJson } from "./image-json.ts";
import { Progress } from "./progress.ts";

export interface Converted {
  bootstrap: Bootstrap;
  /** What was opened, for messages. */
  source: string;
  /** Present when a convert output directory was opened (not a bare bootstrap file). */
  image?: ImageJson;
  store?: FsStore;
}

/** A problem with the input that the user has to fix: printed as one line, exit status 1. */
export class InputError extends Error {}

/** What to ask a proxy for; each is passed on as the query parameter of the same name. */
export interface ProxyRequest {
  platform?: string;
  /** As given, e.g. `64k` (the caller has checked it). */
  chunkSize?: string;
  codec?: string;
  /** How long to keep waiting while the proxy answers 202 (converting); default 300 s. */
  timeoutMs?: number;
}

/** Whether `path` names an image on a proxy rather than something on disk. */
export function isProxyUrl(path: string): boolean {
  return /^https?:\/\//i.test(path);
}

export async function openConverted(path: string, { requireDir = false, proxy = {} }: { requireDir?: boolean; proxy?: ProxyRequest } = {}): Promise<Converted> {
  if (isProxyUrl(path)) {
    if (requireDir) throw new InputError(`${path} is a proxy URL, not a directory written by 'skiff convert'`);
    return openFromProxy(path, proxy);
  }
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (err) {
    throw new InputError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!isDir) {
    if (requireDir) throw new InputError(`${path} is not a directory written by 'skiff convert'`);
    return { bootstrap: decode(new Uint8Array(await readFile(path)), path), source: path };
  }

  let text: string;
  try {
    text = await readFile(join(path, IMAGE_JSON), "utf8");
  } catch {
    throw new InputError(`${path} has no ${IMAGE_JSON}: not a directory written by 'skiff convert'`);
  }
  const image = parseImageJson(text, join(path, IMAGE_JSON));
  // Read-only use: no init(), which would clear the store's temporary directory.
  const store = new FsStore(path);
  const bytes = await getBytes(store, image.bootstrap);
  if (!bytes) throw new InputError(`${path} has no image bootstrap at ${image.bootstrap}`);
  const bootstrap = decode(bytes, join(path, image.bootstrap));
  if (bootstrap.kind !== "image") throw new InputError(`${join(path, image.bootstrap)} is a layer bootstrap, not an image bootstrap`);
  if (bootstrap.blobCount !== image.layers.length) {
    throw new InputError(`${path}: the bootstrap names ${bootstrap.blobCount} blobs but ${IMAGE_JSON} lists ${image.layers.length} layers`);
  }
  image.layers.forEach((layer, i) => {
    const named = bootstrap.blob(i).layerDigest;
    if (named !== layer.digest) throw new InputError(`${path}: bootstrap blob ${i} is layer ${named}, ${IMAGE_JSON} says ${layer.digest}`);
  });
  return { bootstrap, source: path, image, store };
}

export interface ProxyReference {
  /** `http(s)://host[:port]` */
  origin: string;
  name: string;
  /** A tag, or a digest when the reference has one. */
  reference: string;
}

/** `http://HOST[:PORT]/NAME[:TAG][@DIGEST]`; without tag or digest the tag is `latest`. */
export function parseProxyReference(text: string): ProxyReference {
  const fail = (why: string): never => {
    throw new InputError(`invalid proxy image URL ${JSON.stringify(text)}: ${why} (want http://HOST:PORT/NAME:TAG or http://HOST:PORT/NAME@DIGEST)`);
  };
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail("not a URL");
  }
  if (url.username || url.password) fail("credentials in the URL are not supported");
  if (url.search || url.hash) fail("no query or fragment: use --platform, --chunk-size and --codec");
  const path = url.pathname.replace(/^\/+/, "");
  const at = path.indexOf("@");
  const named = at >= 0 ? path.slice(0, at) : path;
  const slash = named.lastIndexOf("/");
  const colon = named.indexOf(":", slash + 1);
  const name = colon >= 0 ? named.slice(0, colon) : named;
  const tag = colon >= 0 ? named.slice(colon + 1) : undefined;
  if (!name) fail("no repository name");
  if (!isValidRepositoryName(name)) fail(`invalid repository name ${JSON.stringify(name)}`);
  if (tag !== undefined && !isValidTag(tag)) fail(`invalid tag ${JSON.stringify(tag)}`);
  let reference = tag ?? "latest";
  if (at >= 0) {
    const digest = parseDigest(path.slice(at + 1));
    if (!digest) fail(`invalid digest ${JSON.stringify(path.slice(at + 1))}`);
    reference = digest!.value;
  }
  return { origin: url.origin, name, reference };
}

// Bounds on how long to sleep between polls whatever Retry-After says, and on the number of polls.
const MIN_POLL_MS = 500;
const MAX_POLL_MS = 60_000;
const MAX_POLLS = 10_000;

/**
 * Fetches an image bootstrap from a proxy's lazy API, waiting while it converts (202 + Retry-After)
 * up to the timeout, and checks it against its Docker-Content-Digest before decoding it.
 */
async function openFromProxy(text: string, opts: ProxyRequest): Promise<Converted> {
  const ref = parseProxyReference(text);
  const query = new URLSearchParams();
  if (opts.platform !== undefined) query.set("platform", opts.platform);
  if (opts.chunkSize !== undefined) query.set("chunk-size", opts.chunkSize);
  if (opts.codec !== undefined) query.set("codec", opts.codec);
  const url = `${ref.origin}/v2/${ref.name}/_skiff/bootstrap/${ref.reference}${query.size ? `?${query}` : ""}`;
  const what = `${ref.name}${ref.reference.includes(":") ? "@" : ":"}${ref.reference}`;
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const started = Date.now();
  const deadline = started + timeoutMs;
  const timedOut = () => new InputError(`${ref.origin} did not finish converting ${what} within ${Math.round(timeoutMs / 1000)} s (see --timeout)`);
  const progress = new Progress();
  try {
    for (let poll = 0; poll < MAX_POLLS; poll++) {
      const left = deadline - Date.now();
      if (left <= 0) throw timedOut();
      const signal = AbortSignal.timeout(left);
      let res: Response;
      let body: Uint8Array;
      try {
        res = await fetch(url, { signal });
        if (res.status === 202) {
          await res.body?.cancel();
          const wait = Math.min(retryAfterMs(res.headers.get("retry-after")), deadline - Date.now());
          const until = Date.now() + wait;
          for (let now = Date.now(); now < until; now = Date.now()) {
            progress.update(`${ref.origin} is converting ${what}: waiting, ${Math.round((now - started) / 1000)} s so far`, true);
            await sleep(Math.min(1000, until - now));
          }
          continue;
        }
        body = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        if (err instanceof InputError) throw err;
        if (signal.aborted) throw timedOut();
        const cause = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message;
        throw new InputError(`cannot fetch the bootstrap of ${what} from ${ref.origin}: ${cause}`);
      }
      if (res.status !== 200) throw new InputError(proxyErrorMessage(res, body));
      const claimed = res.headers.get("docker-content-digest");
      const digest = claimed === null ? null : parseDigest(claimed);
      if (!digest || digest.algorithm !== "sha256") throw new InputError(`${ref.origin} sent the bootstrap of ${what} without a sha256 Docker-Content-Digest`);
      if (createHash("sha256").update(body).digest("hex") !== digest.hex) {
        throw new InputError(`the bootstrap of ${what} from ${ref.origin} does not match its Docker-Content-Digest ${digest.value}`);
      }
      const bootstrap = decode(body, url);
      if (bootstrap.kind !== "image") throw new InputError(`${url} is a layer bootstrap, not an image bootstrap`);
      return { bootstrap, source: text };
    }
    throw timedOut();
  } finally {
    progress.done();
  }
}

/** Retry-After in seconds or as an HTTP date, kept within bounds; 5 s when missing or unreadable. */
function retryAfterMs(value: string | null): number {
  let ms = 5000;
  if (value !== null && /^\s*\d+\s*$/.test(value)) ms = Number(value) * 1000;
  else if (value !== null && !Number.isNaN(Date.parse(value))) ms = Date.parse(value) - Date.now();
  return Math.max(MIN_POLL_MS, Math.min(MAX_POLL_MS, ms));
}

/** An OCI error body as `CODE: message` on one line, or the HTTP status when there is none. */
function proxyErrorMessage(res: Response, body: Uint8Array): string {
  try {
    const parsed = JSON.parse(new TextDecoder().decode(body)) as { errors?: { code?: unknown; message?: unknown }[] };
    const first = parsed.errors?.[0];
    if (first && typeof first.code === "string") {
      const message = typeof first.message === "string" ? first.message : "";
      return `${first.code}: ${message}`.replace(/\s+/g, " ").trim().slice(0, 2000);
    }
  } catch {
    // not an OCI error body
  }
  return `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""} from ${res.url}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function decode(bytes: Uint8Array, where: string): Bootstrap {
  try {
    return Bootstrap.decode(bytes);
  } catch (err) {
    if (err instanceof BootstrapError) throw new InputError(`${where}: ${err.message}`);
    throw err;
  }
}

function parseImageJson(text: string, where: string): ImageJson {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InputError(`${where} is not JSON`);
  }
  const v = value as Partial<ImageJson> | null;
  const isKey = (k: unknown): k is string => {
    if (typeof k !== "string") return false;
    try {
      assertValidKey(k);
      return true;
    } catch {
      return false;
    }
  };
  const ok =
    v !== null &&
    typeof v === "object" &&
    isKey(v.bootstrap) &&
    Array.isArray(v.layers) &&
    v.layers.every((l) => l && typeof l === "object" && typeof l.digest === "string" && isKey(l.data) && isKey(l.bootstrap));
  if (!ok) throw new InputError(`${where} is malformed`);
  return v as ImageJson;
}
