// Opens something converted: what `skiff convert` wrote (DIR/image.json, the image bootstrap in
// DIR's store and each layer's data blob), a bootstrap file given directly, or an image on a skiff
// proxy (`http://HOST:PORT/NAME:TAG` or `…/NAME@DIGEST`), whose bootstrap comes from the lazy API.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { fetchBootstrap, LazyApiError } from "../client/lazy-api.ts";
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

/** Fetches an image bootstrap from a proxy's lazy API, showing the wait while the proxy converts it. */
async function openFromProxy(text: string, opts: ProxyRequest): Promise<Converted> {
  const ref = parseProxyReference(text);
  const what = `${ref.name}${ref.reference.includes(":") ? "@" : ":"}${ref.reference}`;
  const timeoutMs = opts.timeoutMs ?? 300_000;
  const progress = new Progress();
  try {
    const onWait = (seconds: number) => progress.update(`${ref.origin} is converting ${what}: waiting, ${seconds} s so far`, true);
    const { bootstrap } = await fetchBootstrap(ref.origin, ref.name, ref.reference, { ...opts, timeoutMs, onWait });
    return { bootstrap, source: text };
  } catch (err) {
    if (!(err instanceof LazyApiError)) throw err;
    if (err.timedOut) throw new InputError(`${ref.origin} did not finish converting ${what} within ${Math.round(timeoutMs / 1000)} s (see --timeout)`);
    throw new InputError(err.message);
  } finally {
    progress.done();
  }
}

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
