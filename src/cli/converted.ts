// Opens what `skiff convert` wrote: DIR/image.json, the image bootstrap in DIR's store and each
// layer's data blob. `inspect` also accepts a bootstrap file given directly.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Bootstrap, BootstrapError } from "../format/decode.ts";
import { FsStore } from "../store/fs.ts";
import { assertValidKey, getBytes } from "../store/store.ts";
import { IMAGE_JSON, type ImageJson } from "./image-json.ts";

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

export async function openConverted(path: string, { requireDir = false } = {}): Promise<Converted> {
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
