// Prefetch lists: the chunks a workload read, in the order it first read them (`--record FILE`),
// replayed on other nodes before anything else (`--prefetch FILE`). A list names chunks by the
// sha256 of their content, so it outlives the image it was recorded on: a new version of the image
// still starts with whatever chunks it shares with the old one.
//
// The text format: src/format/prefetch-list.ts.
import { appendFile, readFile, writeFile } from "node:fs/promises";
import type { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";
import { parsePrefetchList, PREFETCH_LIST_HEADER as HEADER } from "../../src/format/prefetch-list.ts";

/** Every chunk of the image, each layer's in the order of its data blob (so requests merge). */
export function allChunks(bootstrap: Bootstrap): number[] {
  const order = Array.from({ length: bootstrap.chunkCount }, (_, i) => i);
  const records = order.map((i) => bootstrap.chunk(i));
  return order.sort((a, b) => records[a]!.blob - records[b]!.blob || records[a]!.storedOffset - records[b]!.storedOffset);
}

/** The chunk-table indexes a list names, in its order; digests the image lacks are counted, not fatal. */
export function chunksOfList(text: string, bootstrap: Bootstrap, source: string): { chunks: number[]; unknown: number } {
  let digests: string[];
  try {
    digests = parsePrefetchList(text);
  } catch (err) {
    throw new Error(`${source}: ${(err as Error).message}`);
  }
  const chunks = chunksIn(bootstrap, digests);
  return { chunks, unknown: digests.length - chunks.length };
}

/** The chunk-table indexes of `hexes` in `bootstrap`, in their order (a layer has only its own). */
export function chunksIn(bootstrap: Bootstrap, hexes: string[]): number[] {
  const out: number[] = [];
  for (const hex of hexes) {
    const index = bootstrap.chunkIndexOf(hex);
    if (index !== null) out.push(index);
  }
  return out;
}

export async function readPrefetchList(path: string, bootstrap: Bootstrap): Promise<{ chunks: number[]; unknown: number }> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read prefetch list ${path}: ${(err as Error).message}`);
  }
  return chunksOfList(text, bootstrap, path);
}

/**
 * Writes chunks to a list as they are first read. Appends every second or so rather than per read,
 * so an agent killed mid-run leaves a list that is whole up to its last flush.
 */
export class PrefetchRecorder {
  readonly #path: string;
  readonly #bootstrap: Bootstrap;
  readonly #seen = new Set<string>();
  #pending: string[] = [];
  #writing: Promise<void>;

  private constructor(path: string, bootstrap: Bootstrap, created: Promise<void>) {
    this.#path = path;
    this.#bootstrap = bootstrap;
    this.#writing = created;
  }

  /** Creates (or truncates) the list file. */
  static async create(path: string, bootstrap: Bootstrap): Promise<PrefetchRecorder> {
    const created = writeFile(path, `${HEADER}\n`);
    await created.catch((err: Error) => {
      throw new Error(`cannot write prefetch list ${path}: ${err.message}`);
    });
    return new PrefetchRecorder(path, bootstrap, created);
  }

  /** A read needed this chunk-table entry. */
  saw(chunkIndex: number): void {
    const hex = toHex(this.#bootstrap.chunk(chunkIndex).digest);
    if (this.#seen.has(hex)) return;
    this.#seen.add(hex);
    this.#pending.push(hex);
  }

  get count(): number {
    return this.#seen.size;
  }

  /** Appends what was seen since the last flush. */
  flush(): Promise<void> {
    if (this.#pending.length === 0) return this.#writing;
    const lines = this.#pending.map((hex) => `${hex}\n`).join("");
    this.#pending = [];
    this.#writing = this.#writing.then(() => appendFile(this.#path, lines));
    return this.#writing;
  }
}
