// The seed corpus: real inputs, made at the start of a campaign. Layers come from GNU tar over a
// small tree with the awkward parts of real images (long names, PAX records, links, devices,
// empty files), compressed with zlib and the zstd CLI; the bootstrap is skiff's own conversion of
// that layer; the header parsers start from values real clients and registries send.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { convertLayer } from "../src/convert/layer.ts";
import { DEFAULT_PARAMS } from "../src/format/params.ts";
import { nodeHasher } from "../src/hash/node.ts";
import { parseDigest } from "../src/oci/reference.ts";
import { MemoryStore } from "../src/store/memory.ts";
import { getBytes } from "../src/store/store.ts";

export interface Seeds {
  tars: Uint8Array[];
  gzips: Uint8Array[];
  zstds: Uint8Array[];
  bootstraps: Uint8Array[];
}

const encoder = new TextEncoder();
export const text = (...values: string[]) => values.map((v) => encoder.encode(v));

/** Layers built from a temporary tree by the tar CLI, in GNU and PAX formats. */
function tars(): Uint8Array[] {
  const dir = mkdtempSync(join(tmpdir(), "skiff-fuzz-seed-"));
  try {
    const root = join(dir, "root");
    const deep = join(root, "usr", "lib", "a-rather-long-directory-name-that-needs-more-than-one-hundred-bytes", "and-then-some-more");
    mkdirSync(deep, { recursive: true });
    writeFileSync(join(root, "usr", "small"), "hello\n");
    writeFileSync(join(deep, "file-with-a-long-name-beyond-the-ustar-limit-of-one-hundred-bytes.txt"), "x".repeat(3000));
    writeFileSync(join(root, "empty"), "");
    writeFileSync(join(root, "usr", "ünïcödé"), Buffer.alloc(1500, 7));
    symlinkSync("usr/small", join(root, "link"));
    linkSync(join(root, "usr", "small"), join(root, "hard"));
    execFileSync("mkfifo", [join(root, "fifo")]);
    const out: Uint8Array[] = [];
    for (const format of ["gnu", "pax", "ustar"]) {
      const file = join(dir, `${format}.tar`);
      const args = ["-C", root, "--sort=name", "--numeric-owner", `--format=${format}`, "-cf", file, "."];
      try {
        execFileSync("tar", args, { stdio: "ignore" });
      } catch {
        continue; // ustar refuses the long name; the other two carry it
      }
      out.push(new Uint8Array(readFileSync(file)));
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function makeSeeds(): Promise<Seeds> {
  const layers = tars();
  const gzips = layers.map((t) => new Uint8Array(gzipSync(t)));
  let zstds: Uint8Array[] = [];
  try {
    zstds = layers.map((t) => new Uint8Array(execFileSync("zstd", ["-q", "-c", "-3"], { input: t })));
  } catch {
    zstds = []; // no zstd CLI: the zstd target runs on what the mutator makes of gzip seeds
  }
  const bootstraps: Uint8Array[] = [];
  for (const gz of gzips) {
    const store = new MemoryStore();
    const digest = parseDigest(`sha256:${createHash("sha256").update(gz).digest("hex")}`)!;
    const layer = {
      digest,
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      size: gz.length,
      open: async () => new Blob([gz]).stream(),
    };
    const converted = await convertLayer(layer, { store, hasher: nodeHasher, params: { ...DEFAULT_PARAMS, chunkShift: 16 } });
    bootstraps.push((await getBytes(store, converted.bootstrapKey))!);
  }
  return { tars: layers, gzips, zstds, bootstraps };
}
