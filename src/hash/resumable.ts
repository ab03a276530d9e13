// A sha256/sha512 whose state can be written down and taken up again by another process: a blob
// fetched in steps across Worker invocations is hashed as one whole without a final pass over it.
// Pure JS (@noble/hashes), so several times slower than a native hash; but a native hash's state
// can't be saved, and a final pass over a multi-GiB object would not fit one invocation's CPU time.
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { toHex, fromHex, type HashAlgorithm } from "./hasher.ts";

/** Everything a hash in progress is: plain JSON. */
export interface HashState {
  algorithm: HashAlgorithm;
  /** The chaining words (noble's get()). */
  words: number[];
  /** Bytes hashed so far. */
  length: number;
  /** Hex of the bytes taken since the last whole block. */
  pending: string;
}

// The parts of noble's incremental hash that hold its state (public fields of its classes).
interface NobleState {
  get(): number[];
  set(...words: number[]): void;
  length: number;
  pos: number;
  buffer: Uint8Array;
  update(data: Uint8Array): unknown;
  digest(): Uint8Array;
}

export class ResumableHash {
  readonly #algorithm: HashAlgorithm;
  readonly #h: NobleState;

  private constructor(algorithm: HashAlgorithm, h: NobleState) {
    this.#algorithm = algorithm;
    this.#h = h;
  }

  static start(algorithm: HashAlgorithm): ResumableHash {
    return new ResumableHash(algorithm, create(algorithm));
  }

  /** Takes up a hash where `state` left it; throws on a state that can't be one. */
  static resume(state: HashState): ResumableHash {
    const h = create(state.algorithm);
    const words = h.get().length;
    const pending = fromHex(state.pending);
    if (state.words.length !== words || !state.words.every(Number.isInteger) || !Number.isSafeInteger(state.length) || pending.length >= h.buffer.length || state.length % h.buffer.length !== pending.length) {
      throw new Error("not a hash state");
    }
    h.set(...state.words);
    h.buffer.set(pending);
    h.pos = pending.length;
    h.length = state.length;
    return new ResumableHash(state.algorithm, h);
  }

  update(data: Uint8Array): void {
    this.#h.update(data);
  }

  get length(): number {
    return this.#h.length;
  }

  state(): HashState {
    const h = this.#h;
    return { algorithm: this.#algorithm, words: h.get(), length: h.length, pending: toHex(h.buffer.subarray(0, h.pos)) };
  }

  /** Lowercase hex of the digest; the hash must not be used afterwards. */
  hex(): string {
    return toHex(this.#h.digest());
  }
}

function create(algorithm: HashAlgorithm): NobleState {
  if (algorithm !== "sha256" && algorithm !== "sha512") throw new Error(`no resumable hash for ${String(algorithm)}`);
  return (algorithm === "sha256" ? sha256 : sha512).create() as unknown as NobleState;
}
