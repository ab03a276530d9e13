// What a snapshot's tree uses on disk, as containerd counts it: allocated blocks and distinct inodes
// (a hardlinked file counts once). The walk is asynchronous and never follows symlinks.
import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";

export async function diskUsage(dir: string): Promise<{ size: number; inodes: number }> {
  const seen = new Set<string>();
  let size = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const path = stack.pop()!;
    let st;
    try {
      st = await lstat(path, { bigint: false });
    } catch {
      continue; // removed meanwhile
    }
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) continue;
    seen.add(id);
    size += st.blocks * 512;
    if (st.isDirectory()) for (const name of await readdir(path).catch(() => [] as string[])) stack.push(join(path, name));
  }
  return { size, inodes: seen.size };
}
