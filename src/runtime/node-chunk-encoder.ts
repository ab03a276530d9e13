// Chunk deflate on Node's worker threads (codec none: nothing to do): fflate, most of a deflate-raw
// conversion's CPU, runs beside the threads that cut and write the layer, on the other cores. Same
// bytes as encodeStored (src/convert/chunk-encoder.ts): the same fflate call at the same level in
// each worker, and the same rule for incompressible chunks; test/unit/node-chunk-encoder.test.ts
// compares them.
import { availableParallelism } from "node:os";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { ChunkEncoder, EncodedChunk } from "../convert/chunk-encoder.ts";
import { DEFLATE_LEVEL, type ChunkCodec } from "../format/chunk-codec.ts";

// The worker's source, evaluated as CommonJS (a file next to this one would not exist when the
// TypeScript sources run directly, as in the tests). fflate's path and the level come in workerData.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { deflateSync } = require(workerData.fflate);
// On Linux this lowers this thread's priority only: deflating gives way to the thread that answers
// requests (an early none answer, chunk reads) when the cores are busy.
try { require("node:os").setPriority(workerData.nice); } catch {}
// Each deflate leaves megabytes of arrays behind, which V8 frees when it collects, and it collects
// by how much its small heap grew, not those arrays. Where the process exposes gc (skiff convert), a
// young-generation collection before each chunk frees the last one's: a third of the peak RSS of
// a deflate-raw conversion, for a few percent more CPU (docs/benchmarks.md, "Converting layers").
parentPort.on("message", ({ id, data, codec }) => {
  if (typeof gc === "function") gc({ type: "minor" });
  try {
    let stored = data;
    if (codec === "deflate-raw") {
      const encoded = deflateSync(data, { level: workerData.level });
      // Into the chunk's own buffer, which goes back for the converter to cut into again; fflate's
      // array stays here, for this thread's next collection, not the converting thread's.
      if (encoded.byteLength < data.byteLength) {
        stored = data.subarray(0, encoded.byteLength);
        stored.set(encoded);
      }
    } else if (codec !== "none") {
      throw new Error("unknown chunk codec " + codec);
    }
    parentPort.postMessage({ id, stored, compressed: stored !== data }, [stored.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: String(err && err.message ? err.message : err) });
  }
});
`;

/** The encoder threads' nice value. */
const ENCODER_NICE = 10;

interface Job {
  resolve: (chunk: EncodedChunk) => void;
  reject: (err: Error) => void;
}

interface Reply {
  id: number;
  stored?: Uint8Array;
  compressed?: boolean;
  error?: string;
}

class Lane {
  readonly worker: Worker;
  readonly jobs = new Map<number, Job>();

  constructor(onGone: (lane: Lane) => void) {
    const fflate = createRequire(import.meta.url).resolve("fflate");
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { fflate, level: DEFLATE_LEVEL, nice: ENCODER_NICE } });
    this.worker.unref();
    this.worker.on("message", (reply: Reply) => {
      const job = this.jobs.get(reply.id);
      if (!job) return;
      this.jobs.delete(reply.id);
      // An idle worker must not keep the process alive; a busy one must, or a process whose only
      // pending work is this job would exit under it.
      if (this.jobs.size === 0) this.worker.unref();
      if (reply.error !== undefined) job.reject(new Error(`chunk encoder: ${reply.error}`));
      else job.resolve({ stored: reply.stored!, compressed: reply.compressed! });
    });
    const fail = (err: Error) => {
      onGone(this);
      for (const job of this.jobs.values()) job.reject(err);
      this.jobs.clear();
    };
    this.worker.on("error", fail);
    this.worker.on("exit", (code) => fail(new Error(`chunk encoder worker exited (${code})`)));
  }

  send(id: number, data: Uint8Array, codec: ChunkCodec, job: Job): void {
    if (this.jobs.size === 0) this.worker.ref();
    this.jobs.set(id, job);
    // The chunk's buffer moves to the worker, which sends it back holding the stored bytes
    // (ChunkEncoder.encode takes the buffer over). Shared memory can't move, so it is copied.
    const own = data.buffer instanceof ArrayBuffer ? data : data.slice();
    this.worker.postMessage({ id, data: own, codec }, [own.buffer as ArrayBuffer]);
  }
}

/**
 * A pool of `threads` workers (default: one per core, at most 4), started on first use. Each chunk
 * goes to the worker with the fewest chunks waiting; the converter keeps `window` in flight.
 */
export function nodeChunkEncoder(threads = Math.min(4, availableParallelism())): ChunkEncoder {
  const lanes: Lane[] = [];
  let next = 0;
  const gone = (lane: Lane) => {
    const at = lanes.indexOf(lane);
    if (at >= 0) lanes.splice(at, 1);
  };
  return {
    window: 2 * threads + 2,
    encode: (data, codec) => {
      if (codec === "none") return Promise.resolve({ stored: data, compressed: false });
      return new Promise<EncodedChunk>((resolve, reject) => {
        while (lanes.length < threads) lanes.push(new Lane(gone));
        const lane = lanes.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
        lane.send(next++, data, codec, { resolve, reject });
      });
    },
  };
}
