// What a skiff store holds after a fault, checked from outside: no temporaries left, every stored blob
// hashes to its name, and every converted file is byte for byte what a clean conversion wrote.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { listFiles } from "./files.ts";
import { sleep } from "./processes.ts";

const sha256Hex = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

/** Files under the store's converted/ tree (layer data, layer and image bootstraps), path → sha256. */
export function convertedFiles(dataDir: string): Map<string, string> {
  const root = join(dataDir, "converted");
  if (!existsSync(root)) return new Map();
  return new Map(listFiles(root).map((p) => [p, sha256Hex(join(root, p))]));
}

/**
 * Everything wrong with the store, as sentences (none: []). A failed fetch removes its temporary as
 * it unwinds, which may end just after the client saw its error, so temporaries get a few seconds.
 */
export async function storeProblems(dataDir: string, cleanConversion: Map<string, string>): Promise<string[]> {
  const tmp = join(dataDir, ".tmp");
  for (let i = 0; i < 200 && readdirSync(tmp).length > 0; i++) await sleep(50);
  const problems = readdirSync(tmp).map((name) => `temporary .tmp/${name} left behind`);
  const blobs = join(dataDir, "blobs");
  for (const p of existsSync(blobs) ? listFiles(blobs) : []) {
    if (sha256Hex(join(blobs, p)) !== p.split("/").at(-1)) problems.push(`blobs/${p} does not hash to its name`);
  }
  for (const [path, hash] of convertedFiles(dataDir)) {
    if (cleanConversion.get(path) !== hash) problems.push(`converted/${path} is not what a clean conversion wrote`);
  }
  return problems;
}
