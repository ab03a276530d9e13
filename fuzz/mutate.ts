// Deterministic input mutation: input n of a campaign is a function of (seed, n) alone, so any
// finding can be replayed from its number. The mutations are the classic ones of a byte-level
// fuzzer: flip bits, write boundary values (as bytes and as ASCII digits, since tar and HTTP headers
// carry numbers as text), insert, delete, duplicate and splice in pieces of another seed.

/** xorshift32: small, fast, and the same sequence on every run. */
export class Prng {
  #x: number;
  constructor(seed: number) {
    this.#x = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#x = x >>> 0;
    return this.#x;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
}

const BOUNDARY_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x2f, 0x30, 0x37, 0x39, 0x2d, 0x2c, 0x3d, 0x0a];
const BOUNDARY_TEXT = ["0", "-1", "7777777777777777777", "99999999999999999999", "18446744073709551616", "1e308", "NaN", " ", "", "\0", "\uffff"];
const encoder = new TextEncoder();

/** A mutant of one of `seeds`, picked and changed by `prng` (1 to 8 mutations). */
export function mutate(seeds: Uint8Array[], prng: Prng, maxLength: number): Uint8Array {
  let data: Uint8Array = Uint8Array.from(seeds[prng.below(seeds.length)]!);
  const rounds = 1 + prng.below(8);
  for (let r = 0; r < rounds; r++) data = mutateOnce(data, seeds, prng);
  return data.length > maxLength ? data.subarray(0, maxLength) : data;
}

function mutateOnce(data: Uint8Array, seeds: Uint8Array[], prng: Prng): Uint8Array {
  const at = prng.below(data.length + 1);
  switch (prng.below(8)) {
    case 0: // flip a bit
      if (data.length > 0) data[at % data.length]! ^= 1 << prng.below(8);
      return data;
    case 1: // a boundary byte
      if (data.length > 0) data[at % data.length] = BOUNDARY_BYTES[prng.below(BOUNDARY_BYTES.length)]!;
      return data;
    case 2: // a boundary number as text, over what was there
      return splice(data, at, encoder.encode(BOUNDARY_TEXT[prng.below(BOUNDARY_TEXT.length)]!), true);
    case 3: // insert random bytes
      return splice(data, at, Uint8Array.from({ length: 1 + prng.below(16) }, () => prng.below(256)), false);
    case 4: // delete a run
      return remove(data, at, 1 + prng.below(64));
    case 5: // duplicate a run (repeated headers, repeated members)
      return splice(data, at, data.slice(at, at + 1 + prng.below(1024)), false);
    case 6: // truncate
      return data.subarray(0, at);
    default: {
      // splice in a piece of another seed
      const other = seeds[prng.below(seeds.length)]!;
      const from = prng.below(other.length);
      return splice(data, at, other.subarray(from, from + 1 + prng.below(512)), prng.below(2) === 0);
    }
  }
}

function remove(data: Uint8Array, at: number, n: number): Uint8Array {
  const end = Math.min(data.length, at + n);
  const out = new Uint8Array(data.length - (end - at));
  out.set(data.subarray(0, at));
  out.set(data.subarray(end), at);
  return out;
}

function splice(data: Uint8Array, at: number, piece: Uint8Array, overwrite: boolean): Uint8Array {
  const tail = data.subarray(Math.min(data.length, at + (overwrite ? piece.length : 0)));
  const out = new Uint8Array(at + piece.length + tail.length);
  out.set(data.subarray(0, at));
  out.set(piece, at);
  out.set(tail, at + piece.length);
  return out;
}
