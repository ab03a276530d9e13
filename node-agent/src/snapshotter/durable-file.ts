// Replacing a small file so that a crash at any instant leaves the old content or the new, never a
// torn file: write a temp file, fsync it, rename it over the old one, fsync the directory.
import { open, rename } from "node:fs/promises";
import { dirname } from "node:path";

export async function writeFileDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const file = await open(tmp, "w");
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), "r");
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
