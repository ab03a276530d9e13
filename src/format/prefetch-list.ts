// Prefetch lists as text: the chunks a workload read, in the order it first read them, named by the
// sha256 of their content. The node agent writes and replays them (`--record`, `--prefetch`); nodes
// report them to the edge and get the merged list back (docs/api.md, "Learned prefetch").
//
// Format: the line `# skiff prefetch list v1`, then one lowercase sha256 hex per line. Lines
// starting with `#` are comments; blank lines are ignored; surrounding white space (a `\r`) is not
// part of a line.

export const PREFETCH_LIST_HEADER = "# skiff prefetch list v1";
export const PREFETCH_LIST_TYPE = "text/plain; charset=utf-8";
/** The most digests a list sent to the edge may hold. */
export const MAX_REPORT_DIGESTS = 65_536;
/** The largest list body the edge reads: 4 MiB, about 64,500 digests. */
export const MAX_REPORT_BYTES = 4 * 2 ** 20;

const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** A text that is not a prefetch list (`tooMany`: one with more digests than allowed). */
export class PrefetchListError extends Error {
  override name = "PrefetchListError";
  constructor(
    message: string,
    readonly tooMany = false,
  ) {
    super(message);
  }
}

/**
 * The digests of a list, in its order (repeats kept). Throws a PrefetchListError for a text that is
 * not a list, or past `maxDigests` digests.
 */
export function parsePrefetchList(text: string, maxDigests = Infinity): string[] {
  const lines = text.split("\n");
  if (lines[0]?.trim() !== PREFETCH_LIST_HEADER) throw new PrefetchListError(`not a skiff prefetch list: its first line must be "${PREFETCH_LIST_HEADER}"`);
  const digests: string[] = [];
  for (let n = 1; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (line === "" || line.startsWith("#")) continue;
    if (!HEX_DIGEST.test(line)) throw new PrefetchListError(`line ${n + 1}: not a lowercase sha256 hex digest: ${JSON.stringify(line.slice(0, 80))}`);
    if (digests.length >= maxDigests) throw new PrefetchListError(`more than ${maxDigests} digests`, true);
    digests.push(line);
  }
  return digests;
}

/** The list text of these digests (lowercase sha256 hex), header first. */
export function formatPrefetchList(digests: Iterable<string>): string {
  let text = `${PREFETCH_LIST_HEADER}\n`;
  for (const d of digests) text += `${d}\n`;
  return text;
}

/** How many of a list's first digests fit in a body of `maxBytes` and `maxDigests` digests. */
export function digestsThatFit(count: number, maxBytes = MAX_REPORT_BYTES, maxDigests = MAX_REPORT_DIGESTS): number {
  const room = Math.floor((maxBytes - PREFETCH_LIST_HEADER.length - 1) / 65);
  return Math.max(0, Math.min(count, room, maxDigests));
}
