// libzstd in WebAssembly (./zstd-wasm.ts's module) on a worker thread, as the converter's zstd
// decoder where node:zlib has none (Node before 22.15): the converting thread then hashes and cuts
// while another core decodes, as node:zlib's decoders do on the thread pool. One worker serves
// every frame being decoded in the process, each in a session of its own.
//
// Flow is bounded both ways. Compressed bytes: a write waits while more than INPUT_AHEAD bytes
// sent are not yet taken by the decoder. Output: the worker decodes only as far as the reader has
// given it credit, OUTPUT_AHEAD bytes beyond what it has read, so a zero-filled layer cannot pile
// up megabytes faster than the converter takes them. Output pieces the reader is done with come
// back with the credit (recycle) and are written over, instead of a fresh megabyte per piece.
import { Worker } from "node:worker_threads";
import type { UnzstdFactory } from "../convert/decompress.ts";
import { INPUT_PIECE, OUTPUT_PIECE, openZstdSessionSource, ZSTD_ERRORS_SOURCE, ZSTD_TRUNCATED, zstdImportsSource, zstdStepSource } from "./zstd-wasm.ts";

/** Compressed bytes sent to the worker and not yet taken, before a write waits. */
const INPUT_AHEAD = 2 ** 20;
/**
 * Decoded bytes the worker may send beyond what the reader has read: four output pieces. Since the
 * tar parser works through a piece at once and hands it back, they no longer pile up: the Debian
 * zstd layer converted 2 to 3 % sooner than with one piece, peaking 3 to 4 MiB higher
 * (docs/benchmarks.md, "Per-entry costs"). Before it, more pieces ahead peaked 10 to 25 MiB higher
 * for no gain.
 */
const OUTPUT_AHEAD = 4 * OUTPUT_PIECE;

// The worker's source, evaluated as CommonJS (a file next to this one would not exist when the
// TypeScript sources run directly, as in the tests). The decode step, the session's setup and the
// module's imports are zstd-wasm.ts's own.
const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const ZSTD_ERRORS = ${ZSTD_ERRORS_SOURCE};
const zstdStep = ${zstdStepSource};
const openZstdSession = ${openZstdSessionSource};
const zstdImports = ${zstdImportsSource};
const INPUT_PIECE = ${INPUT_PIECE}, OUTPUT_PIECE = ${OUTPUT_PIECE};
const sessions = new Map();
// Output buffers the converting thread gave back, to copy the next pieces into.
const spareOutputs = [];

// A finished session's instance, its memory and buffers, for the next: layers of many frames
// (zstd:chunked) would otherwise instantiate the module for each. Its memory stays at the largest
// window it met until the worker ends (idle: WORKER_IDLE_MS).
let idle = null;

function open(id, module) {
  const core = idle || openZstdSession(new WebAssembly.Instance(module, zstdImports()), INPUT_PIECE, OUTPUT_PIECE);
  idle = null;
  if (!core.dctx && !(core.dctx = core.z.ZSTD_createDCtx())) throw new Error("zstd decoder: out of WebAssembly memory");
  sessions.set(id, Object.assign(core, { id, inLen: 0, inPos: 0, pieces: [], piece: null, at: 0, expecting: 0, credit: 0, ended: false, drained: true }));
}

function close(s) {
  sessions.delete(s.id);
  s.z.ZSTD_freeDCtx(s.dctx);
  s.dctx = 0;
  s.pieces = [];
  s.piece = null;
  idle = s;
}

// The next input into the module's input space: false when none is waiting. A piece all of whose
// bytes went in is reported taken (the writer may send more).
function nextInput(s) {
  while (!s.piece || s.at === s.piece.byteLength) {
    // Sent back for the next piece to be copied into: freed here, it would wait for this thread's
    // garbage collector, which its little garbage seldom starts.
    if (s.piece) parentPort.postMessage({ id: s.id, took: s.piece.byteLength, buffer: s.piece.buffer }, [s.piece.buffer]);
    s.piece = s.pieces.shift() || null;
    s.at = 0;
    if (!s.piece) return false;
  }
  const n = Math.min(INPUT_PIECE, s.piece.byteLength - s.at);
  new Uint8Array(s.z.memory.buffer).set(s.piece.subarray(s.at, s.at + n), s.input);
  s.at += n;
  s.inLen = n;
  s.inPos = 0;
  return true;
}

// A failed session's instance is not kept: libzstd's state in it is not known.
function fail(s, err) {
  sessions.delete(s.id);
  parentPort.postMessage({ id: s.id, error: String(err && err.message ? err.message : err) });
}

// Decodes while the reader has credit and input is there; takes a piece once all of it went in
// and libzstd holds no more output for it.
function run(s) {
  try {
    while (s.credit > 0) {
      if (s.inPos === s.inLen && s.drained && !nextInput(s)) break;
      const { produced, taken, ret } = zstdStep(s, ZSTD_ERRORS);
      s.expecting = ret;
      s.inPos = taken;
      // More output may wait inside libzstd when the output space came back full.
      s.drained = produced < OUTPUT_PIECE || ret === 0;
      if (produced > 0) {
        // Each piece in a whole piece's buffer, so that any piece given back holds the next one.
        const out = new Uint8Array(spareOutputs.pop() || new ArrayBuffer(OUTPUT_PIECE), 0, produced);
        out.set(new Uint8Array(s.z.memory.buffer, s.output, produced));
        s.credit -= produced;
        parentPort.postMessage({ id: s.id, out }, [out.buffer]);
      }
    }
    if (s.ended && !s.piece && s.pieces.length === 0 && s.inPos === s.inLen && s.drained) {
      const truncated = s.expecting !== 0;
      close(s);
      parentPort.postMessage({ id: s.id, error: truncated ? ${JSON.stringify(ZSTD_TRUNCATED)} : undefined, done: true });
    }
  } catch (err) {
    fail(s, err);
  }
}

parentPort.on("message", (m) => {
  if (m.buffers) spareOutputs.push(...m.buffers);
  if (m.open) {
    try { open(m.id, m.module); } catch (err) { parentPort.postMessage({ id: m.id, error: String(err.message || err) }); }
    return;
  }
  const s = sessions.get(m.id);
  if (!s) return;
  if (m.cancel) return close(s);
  if (m.bytes) s.pieces.push(m.bytes);
  if (m.credit) s.credit += m.credit;
  if (m.end) s.ended = true;
  run(s);
});
`;

/** The converting thread's side of one frame's decoding. */
interface Session {
  onOut(out: Uint8Array<ArrayBuffer>): void;
  onTook(n: number): void;
  onEnd(error?: string): void;
}

const sessions = new Map<number, Session>();
let nextId = 0;
let worker: Worker | null = null;
let idleTimer: ReturnType<typeof setTimeout> | undefined;
/** How long the worker outlives its last session: a layer's frames follow each other closely. */
const WORKER_IDLE_MS = 2000;

/** Ends the worker once no session has needed it for WORKER_IDLE_MS, and its memory with it. */
function idleWorker(): void {
  worker?.unref();
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    if (sessions.size > 0 || !worker) return;
    const w = worker;
    worker = null;
    void w.terminate();
  }, WORKER_IDLE_MS);
  idleTimer.unref();
}

/** The worker, started on first use; it keeps the process alive only while a session is open. */
function theWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(WORKER_SOURCE, { eval: true });
  w.unref();
  w.on("message", (m: { id: number; out?: Uint8Array<ArrayBuffer>; took?: number; buffer?: ArrayBuffer; error?: string; done?: boolean }) => {
    if (m.buffer && spareInputs.length < SPARE_INPUTS) spareInputs.push(m.buffer);
    const session = sessions.get(m.id);
    if (m.out) madeHere.add(m.out.buffer);
    if (m.out) session?.onOut(m.out);
    else if (m.took !== undefined) session?.onTook(m.took);
    else if (m.done || m.error !== undefined) session?.onEnd(m.error);
  });
  // Every session is this worker's: another starts only once this one is ended (see leave).
  const gone = (err: Error) => {
    if (worker !== w) return;
    worker = null;
    for (const session of [...sessions.values()]) session.onEnd(err.message);
  };
  w.on("error", gone);
  w.on("exit", (code) => gone(new Error(`zstd worker exited (${code})`)));
  worker = w;
  return w;
}

/** Input buffers the worker is done with, to copy the next pieces into. */
const spareInputs: ArrayBuffer[] = [];
const SPARE_INPUTS = 4;
/** The size of a new input buffer: the file reader's and the blob cache's pieces fit. */
const INPUT_BUFFER = 2 ** 20;

/**
 * A copy of `piece` alone in a buffer of its own, to be moved to the worker: posting the view
 * would copy the whole buffer it views.
 */
function inputCopy(piece: Uint8Array): Uint8Array<ArrayBuffer> {
  const at = spareInputs.findIndex((b) => b.byteLength >= piece.byteLength);
  const buffer = at >= 0 ? spareInputs.splice(at, 1)[0]! : new ArrayBuffer(Math.max(piece.byteLength, INPUT_BUFFER));
  const copy = new Uint8Array(buffer, 0, piece.byteLength);
  copy.set(piece);
  return copy;
}

/** Output buffers the worker made, while the converting thread holds them. */
const madeHere = new WeakSet<ArrayBuffer>();
/** Output buffers given back (recycle), to go to the worker with the next credit. */
const spareOutputs: ArrayBuffer[] = [];
/** Enough for the pieces between the reader and the worker (OUTPUT_AHEAD) and a few in flight. */
const SPARE_OUTPUTS = OUTPUT_AHEAD / OUTPUT_PIECE + 2;

/**
 * Takes back a piece of output the reader is done with: the worker writes a later piece into it.
 * A piece of a buffer the worker did not make is left alone.
 */
function recycle(piece: Uint8Array): void {
  const buffer = piece.buffer;
  if (!(buffer instanceof ArrayBuffer) || !madeHere.has(buffer) || spareOutputs.length >= SPARE_OUTPUTS) return;
  madeHere.delete(buffer);
  spareOutputs.push(buffer);
}

/** libzstd on a worker thread, given the compiled module (./node-zstd.ts compiles it once). */
export function threadUnzstd(loadModule: () => Promise<WebAssembly.Module>): UnzstdFactory {
  return { kind: "stream", create: () => decodeOnWorker(loadModule), recycle, prepare: () => prepare(loadModule) };
}

/**
 * Starts the worker and compiles the module ahead of the first session: a worker took about 50 ms
 * to run its first line here, 0.1 s while `skiff convert` loaded its modules beside it. Unused,
 * the worker ends as an idle one does. A failed compile is reported to the first session, which
 * awaits the same promise.
 */
function prepare(loadModule: () => Promise<WebAssembly.Module>): void {
  loadModule().catch(() => {});
  theWorker();
  if (sessions.size === 0) idleWorker();
}

function decodeOnWorker(loadModule: () => Promise<WebAssembly.Module>): ReadableWritablePair<Uint8Array, Uint8Array<ArrayBuffer>> {
  const id = nextId++;
  let output!: ReadableStreamDefaultController<Uint8Array<ArrayBuffer>>;
  /** Credit given and not yet used: decoded bytes still on their way. */
  let coming = 0;
  /** Compressed bytes sent and not yet taken by the decoder. */
  let untaken = 0;
  let roomWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;
  let endWaiter: (() => void) | null = null;
  let failure: Error | null = null;

  /** The session ends: done (err absent), failed, or cancelled by either side. */
  const leave = (err?: Error) => {
    if (!sessions.delete(id)) return;
    if (sessions.size === 0) idleWorker();
    if (err) {
      failure = err;
      output.error(err);
      roomWaiter?.reject(err);
    } else {
      output.close();
      roomWaiter?.resolve();
    }
    roomWaiter = null;
    endWaiter?.();
  };
  const started = (async () => {
    // The worker starts (about 50 ms) while the module compiles (about 12 ms, once per process).
    theWorker();
    clearTimeout(idleTimer);
    let module: WebAssembly.Module;
    try {
      module = await loadModule();
      // Cancelled meanwhile: no session to open.
      if (failure) throw failure;
    } catch (err) {
      if (sessions.size === 0) idleWorker();
      throw err;
    }
    // The same worker, unless it ended meanwhile.
    const w = theWorker();
    clearTimeout(idleTimer);
    if (sessions.size === 0) w.ref();
    sessions.set(id, {
      onOut: (out) => {
        coming -= out.byteLength;
        output.enqueue(out);
      },
      onTook: (n) => {
        untaken -= n;
        if (untaken > INPUT_AHEAD) return;
        roomWaiter?.resolve();
        roomWaiter = null;
      },
      onEnd: (error) => leave(error === undefined ? undefined : new Error(error)),
    });
    w.postMessage({ id, open: true, module });
    return w;
  })();
  started.catch(() => {}); // each pull and write that awaits it reports it
  /** Tells the worker, unless the session has ended. */
  const post = (w: Worker, message: object, transfer?: ArrayBuffer[]) => {
    if (sessions.has(id)) w.postMessage({ id, ...message }, transfer);
  };
  const cancel = (reason: unknown) => {
    const err = reason instanceof Error ? reason : new Error(String(reason ?? "zstd decoding cancelled"));
    if (worker && sessions.has(id)) worker.postMessage({ id, cancel: true });
    failure ??= err;
    leave(err);
  };

  return {
    readable: new ReadableStream<Uint8Array<ArrayBuffer>>(
      {
        start: (controller) => void (output = controller),
        // Credit up to what the queue has room for, less what is on its way.
        pull: async () => {
          const w = await started;
          const more = (output.desiredSize ?? 0) - coming;
          if (more <= 0) return;
          coming += more;
          const buffers = sessions.has(id) ? spareOutputs.splice(0) : [];
          post(w, { credit: more, buffers }, buffers);
        },
        cancel,
      },
      { highWaterMark: OUTPUT_AHEAD, size: (piece) => piece.byteLength },
    ),
    writable: new WritableStream<Uint8Array>({
      write: async (piece) => {
        const w = await started;
        if (failure) throw failure;
        untaken += piece.byteLength;
        const bytes = inputCopy(piece);
        post(w, { bytes }, [bytes.buffer]);
        if (untaken > INPUT_AHEAD) await new Promise<void>((resolve, reject) => (roomWaiter = { resolve, reject }));
      },
      close: async () => {
        const w = await started;
        if (sessions.has(id)) await new Promise<void>((resolve) => ((endWaiter = resolve), post(w, { end: true })));
        if (failure) throw failure;
      },
      abort: cancel,
    }),
  };
}
