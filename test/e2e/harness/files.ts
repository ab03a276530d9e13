// File comparisons for e2e assertions: list a tree, compare two trees byte for byte, hash a file
// by streaming it, find paths that mention a string.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";

/** Every regular file below `dir`, as sorted paths relative to it. Bounded to 100,000 entries. */
export function listFiles(dir: string): string[] {
  const out: string[] = [];
  const stack = [dir];
  let visited = 0;
  while (stack.length > 0 && visited < 100_000) {
    const d = stack.pop()!;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      visited++;
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else out.push(relative(dir, p));
    }
  }
  return out.sort();
}

/** Every path (files and directories) below `dir` (empty when `dir` does not exist). */
export function listAllPaths(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const stack = [dir];
  while (stack.length > 0 && out.length < 200_000) {
    const d = stack.pop()!;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(p);
      if (e.isDirectory()) stack.push(p);
    }
  }
  return out;
}

export interface TreeDiff {
  onlyInA: string[];
  onlyInB: string[];
  different: string[];
  same: string[];
}

/** Compare two trees: the same file names, each file byte-identical (files read whole: keep them small). */
export function compareTrees(a: string, b: string): TreeDiff {
  const fa = listFiles(a);
  const fb = listFiles(b);
  const sb = new Set(fb);
  const sa = new Set(fa);
  const diff: TreeDiff = { onlyInA: [], onlyInB: fb.filter((f) => !sa.has(f)), different: [], same: [] };
  for (const f of fa) {
    if (!sb.has(f)) diff.onlyInA.push(f);
    else if (statSync(join(a, f)).size !== statSync(join(b, f)).size || !readFileSync(join(a, f)).equals(readFileSync(join(b, f)))) {
      diff.different.push(f);
    } else diff.same.push(f);
  }
  return diff;
}

/** sha256 of a file, streamed (`sha256:<hex>`). */
export async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) h.update(chunk as Buffer);
  return `sha256:${h.digest("hex")}`;
}
