// The JSON form of a decoded bootstrap that docs/format.md's test vectors are compared with. The
// lead generates the documented vectors with these helpers, and format-vectors.test.ts checks them.
import type { Bootstrap } from "../../src/format/decode.ts";
import { toHex } from "../../src/hash/hasher.ts";

export interface VectorEntry {
  path: string;
  type: string;
  /** Permission bits including setuid/setgid/sticky, as `0o755`. */
  mode: string;
  uid: number;
  gid: number;
  nlink: number;
  size: number;
  /** Symlinks (and a layer's hardlink references): the target. */
  target?: string;
  /** Regular files: each chunk's sha256 in hex, in file order. */
  chunks?: string[];
}

export interface VectorJson {
  kind: "layer" | "image";
  platform: string;
  chunkShift: number;
  /** The header's codec id (0 none, 1 deflate-raw). */
  codec: number;
  entries: VectorEntry[];
}

/** Every entry in `Bootstrap.walk()` order, hardlinked names included. */
export function vectorJson(b: Bootstrap): VectorJson {
  const entries = [...b.walk()].map(({ path, inode }) => {
    const ino = b.inode(inode);
    const e: VectorEntry = { path, type: ino.type, mode: `0o${(ino.mode & 0o7777).toString(8)}`, uid: ino.uid, gid: ino.gid, nlink: ino.nlink, size: ino.size };
    if (ino.type === "symlink" || ino.type === "hardlink-ref") e.target = b.readlink(inode);
    if (ino.type === "file") e.chunks = b.chunks(inode).map((c) => toHex(c.digest));
    return e;
  });
  return { kind: b.kind, platform: b.platform, chunkShift: b.chunkShift, codec: b.codec, entries };
}

/** Bytes as a hex block for docs/format.md: 32 bytes a line, bytes separated by spaces. */
export function hexBlock(bytes: Uint8Array): string {
  const lines: string[] = [];
  for (let i = 0; i < bytes.length; i += 32) lines.push([...bytes.subarray(i, i + 32)].map((x) => x.toString(16).padStart(2, "0")).join(" "));
  return lines.join("\n");
}

/** A named vector as the two fenced blocks docs/format.md holds. */
export function vectorMarkdown(name: string, b: Bootstrap): string {
  const fence = "```";
  return `${fence}hex test-vector ${name}\n${hexBlock(b.bytes)}\n${fence}\n\n${fence}json test-vector ${name}\n${JSON.stringify(vectorJson(b), null, 2)}\n${fence}\n`;
}

/**
 * The vectors in a markdown text: fenced blocks opened by "```hex test-vector NAME" and
 * "```json test-vector NAME". Hex blocks may hold whitespace and `#` comments to the end of a line.
 */
export function parseVectors(markdown: string): Map<string, { hex?: Uint8Array; json?: unknown }> {
  const out = new Map<string, { hex?: Uint8Array; json?: unknown }>();
  const fence = /^(`{3,})(hex|json)[ \t]+test-vector[ \t]+(\S+)[ \t]*\n([\s\S]*?)^\1[ \t]*$/gm;
  for (const m of markdown.matchAll(fence)) {
    const [, , lang, name, body] = m as unknown as [string, string, "hex" | "json", string, string];
    const v = out.get(name) ?? {};
    if (v[lang] !== undefined) throw new Error(`test vector ${name} has two ${lang} blocks`);
    if (lang === "hex") {
      const digits = body.replace(/#.*$/gm, "").replace(/\s+/g, "");
      if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`test vector ${name}: the hex block is not whole bytes of hex`);
      v.hex = Uint8Array.from(digits.match(/../g) ?? [], (x) => parseInt(x, 16));
    } else {
      try {
        v.json = JSON.parse(body);
      } catch (err) {
        throw new Error(`test vector ${name}: the json block does not parse: ${(err as Error).message}`);
      }
    }
    out.set(name, v);
  }
  return out;
}
