// What is fuzzed, and what counts as a clean refusal. Each target feeds one mutated input to one
// parser and uses everything it returns, as its callers would. Errors of the kinds a target lists
// are refusals, working as designed; anything else thrown (a TypeError from reading past an array,
// an engine RangeError from a huge allocation, a raw library error) is a finding.
import { BootstrapError, Bootstrap } from "../src/format/decode.ts";
import { ConfigError, resolveConfig } from "../src/config/config.ts";
import { decompressLayer, LayerFormatError } from "../src/convert/decompress.ts";
import { parseRange } from "../src/http/range.ts";
import { parseAuthorization } from "../src/access/authorization.ts";
import { parseChallenges } from "../src/oci/challenge.ts";
import { parseDigest, parseImageReference } from "../src/oci/reference.ts";
import { TarError, TarParser } from "../src/convert/tar.ts";
import { convertLayer } from "../src/convert/layer.ts";
import { nodeHasher } from "../src/hash/node.ts";
import { MemoryStore } from "../src/store/memory.ts";
import { createHash } from "node:crypto";
import { text, type Seeds } from "./seeds.ts";
import type { mutate } from "./mutate.ts";
import { mutateJson } from "./mutate-json.ts";

export interface Target {
  name: string;
  /** Longest input the mutator may make. */
  maxLength: number;
  seeds(s: Seeds): Uint8Array[];
  run(input: Uint8Array): unknown;
  /** The error classes that are this target's refusals (exactly these: a TypeError is not an Error here). */
  refusals: (new (...args: never[]) => Error)[];
  /** How mutants are made, when bytes are not the way (default: byte mutations). */
  mutate?: typeof mutate;
}

const decoder = new TextDecoder(); // lenient, as header bytes decoded by a runtime are
const asText = (input: Uint8Array) => decoder.decode(input);

/** A body arriving in uneven pieces, as from the network. */
function stream(input: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  let piece = 1;
  return new ReadableStream({
    pull(controller) {
      if (at >= input.length) return controller.close();
      piece = (piece * 7 + 3) % 4096 || 1;
      controller.enqueue(input.slice(at, at + piece));
      at += piece;
    },
  });
}

async function drainStream(body: ReadableStream<Uint8Array>): Promise<number> {
  const reader = body.getReader();
  let n = 0;
  for (let r = await reader.read(); !r.done; r = await reader.read()) n += r.value.length;
  return n;
}

/** Every entry, its names, xattrs and body, as the converter reads them. */
async function readAllEntries(source: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  const parser = new TarParser({
    entry: (entry) => void (n += entry.path.length + entry.linkName.length + entry.xattrs.size),
    body: (bytes) => void (n += bytes.length),
  });
  const reader = source.getReader();
  for (let r = await reader.read(); !r.done; r = await reader.read()) if (!parser.finished) parser.push(r.value);
  parser.end();
  return n;
}

export const TARGETS: Target[] = [
  {
    name: "tar",
    maxLength: 1 << 20,
    seeds: (s) => s.tars,
    run: (input) => readAllEntries(stream(input)),
    refusals: [TarError],
  },
  {
    name: "gzip",
    maxLength: 1 << 20,
    seeds: (s) => s.gzips,
    run: (input) => drainStream(decompressLayer(stream(input), "application/vnd.oci.image.layer.v1.tar+gzip")),
    refusals: [LayerFormatError],
  },
  {
    name: "zstd",
    maxLength: 1 << 20,
    seeds: (s) => (s.zstds.length > 0 ? s.zstds : s.gzips),
    run: (input) => drainStream(decompressLayer(stream(input), "application/vnd.oci.image.layer.v1.tar+zstd")),
    refusals: [LayerFormatError],
  },
  {
    name: "layer (gzip + tar)",
    maxLength: 1 << 20,
    seeds: (s) => s.gzips,
    run: (input) => readAllEntries(decompressLayer(stream(input), "application/vnd.oci.image.layer.v1.tar+gzip")),
    refusals: [LayerFormatError, TarError],
  },
  {
    // The whole conversion of an uncompressed layer: tar, tree, bootstrap encoding, then a walk of
    // the result. The reader alone does not build the tree (a 20,000-level path broke only that).
    name: "conversion",
    maxLength: 1 << 20,
    seeds: (s) => s.tars,
    run: async (input) => {
      const digest = parseDigest(`sha256:${createHash("sha256").update(input).digest("hex")}`)!;
      const layer = { digest, mediaType: "application/vnd.oci.image.layer.v1.tar", size: input.length, open: async () => stream(input) };
      const converted = await convertLayer(layer, { store: new MemoryStore(), hasher: nodeHasher, params: { chunkShift: 16, codec: "none" } });
      let n = 0;
      for (const { inode } of converted.bootstrap.walk()) n += converted.bootstrap.chunks(inode).length;
      return n;
    },
    refusals: [TarError, LayerFormatError],
  },
  {
    name: "bootstrap",
    maxLength: 1 << 20,
    seeds: (s) => s.bootstraps,
    run: (input) => {
      // Decoding validates; then every accessor a mount uses, over the whole tree.
      const b = Bootstrap.decode(input);
      let n = 0;
      for (const { inode } of b.walk()) {
        const ino = b.inode(inode);
        n += b.xattrs(inode).size;
        if (ino.type === "symlink") n += b.readlink(inode).length;
        if (ino.type === "file") for (const c of b.chunks(inode)) n += c.size + b.blob(c.blob).storedSize;
      }
      return n;
    },
    refusals: [BootstrapError],
  },
  {
    name: "range header",
    maxLength: 4096,
    seeds: () => text("bytes=0-99", "bytes=-500", "bytes=100-", "bytes=0-0,5-9,-1", "bytes = 1 - 2 , 4-", "items=0-1", "bytes=5-1"),
    run: (input) => parseRange(asText(input), 10_000),
    refusals: [],
  },
  {
    name: "image reference",
    maxLength: 4096,
    seeds: () => text("library/alpine:3.19", "ghcr.io/org/app@sha256:" + "ab".repeat(32), "localhost:5000/a/b:c", "sha256:" + "0".repeat(64)),
    run: (input) => {
      const s = asText(input);
      return [parseDigest(s), parseImageReference(s)];
    },
    refusals: [Error], // a plain Error naming the reference and why
  },
  {
    name: "WWW-Authenticate",
    maxLength: 4096,
    seeds: () => text('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"', 'Basic realm="x", Bearer realm="y",error="invalid_token"', 'Bearer realm="a\\"b"'),
    run: (input) => parseChallenges(asText(input)),
    refusals: [],
  },
  {
    name: "Authorization",
    maxLength: 4096,
    seeds: () => text("Basic dXNlcjpwYXNz", "Bearer abc.def.ghi", "basic Og==", "Bearer "),
    run: (input) => parseAuthorization(asText(input)),
    refusals: [],
  },
  {
    name: "config",
    maxLength: 16_384,
    seeds: () =>
      text(
        JSON.stringify({ upstreams: { "docker.io": {}, corp: { url: "https://registry.corp.example", credentials: { username: "u", passwordEnv: "P" }, allowHosts: ["s.example"], tagTtl: 30 } }, defaultUpstream: "docker.io", access: { mode: "credentials", users: [{ username: "ci", passwordEnv: "P", repositories: ["docker.io/*"] }], tokenSecretEnv: "S" } }),
        JSON.stringify({ upstreams: { "ghcr.io": { public: true } }, access: { mode: "passthrough" } }),
      ),
    run: (input) => resolveConfig(JSON.parse(asText(input)), { env: { P: "secret", S: "s".repeat(40) }, readFile: () => "from a file" }),
    refusals: [ConfigError, SyntaxError],
    mutate: mutateJson,
  },
];
