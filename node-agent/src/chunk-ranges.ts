// Plans the Range requests for a set of chunks: chunks of one data blob whose stored bytes are
// adjacent, or separated by a small gap, become one request (Nydus merges reads the same way: the
// few wasted gap bytes cost far less than another round trip).
import type { ChunkRecord } from "../../src/format/model.ts";

export interface PlannedChunk {
  hex: string;
  record: ChunkRecord;
}

export interface PlannedRange {
  layerDigest: string;
  /** First and last byte of the data blob, inclusive, as in `Range: bytes=start-end`. */
  start: number;
  end: number;
  chunks: PlannedChunk[];
}

/** The largest gap worth reading through: 8 KiB at 1 MiB chunks, scaled with the chunk size. */
export function mergeGap(chunkShift: number): number {
  return 2 ** chunkShift / 128;
}

export function planRanges(
  wanted: { hex: string; record: ChunkRecord; layerDigest: string }[],
  maxGap: number,
  maxRangeBytes: number,
): PlannedRange[] {
  const byLayer = new Map<string, { hex: string; record: ChunkRecord }[]>();
  for (const w of wanted) {
    let list = byLayer.get(w.layerDigest);
    if (!list) byLayer.set(w.layerDigest, (list = []));
    list.push({ hex: w.hex, record: w.record });
  }
  const out: PlannedRange[] = [];
  for (const [layerDigest, list] of byLayer) {
    list.sort((a, b) => a.record.storedOffset - b.record.storedOffset);
    let cur: PlannedRange | undefined;
    for (const c of list) {
      const start = c.record.storedOffset;
      const end = start + c.record.storedSize - 1;
      const gap = cur ? start - (cur.end + 1) : Infinity;
      if (cur && gap <= maxGap && Math.max(cur.end, end) - cur.start + 1 <= maxRangeBytes) {
        cur.end = Math.max(cur.end, end);
        cur.chunks.push(c);
      } else {
        cur = { layerDigest, start, end, chunks: [c] };
        out.push(cur);
      }
    }
  }
  return out;
}
