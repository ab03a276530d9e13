// A fixed-bucket latency histogram in the spirit of HdrHistogram: values in whole microseconds,
// exact below 2048 µs and within 1/1024 (0.1 %) above, in 192 KiB of counters whatever the run's
// length or request rate. Recording is O(1) and allocation-free, so it can sit on a benchmark's
// hot path; storing every sample instead would grow with duration × rate.

const SUB_BITS = 10; // 1024 sub-buckets per power of two: 0.1 % relative precision
const SUB = 1 << SUB_BITS;
const MAX_US = 2 ** 32 - 1; // ~71 minutes; longer values are clamped (requests time out long before)
const BUCKETS = (32 - SUB_BITS) * SUB + 2 * SUB;

export class Histogram {
  readonly #counts = new Float64Array(BUCKETS);
  #total = 0;
  #maxUs = 0;

  get count(): number {
    return this.#total;
  }

  /** Records one value given in milliseconds (fractional). */
  recordMs(ms: number): void {
    const us = Math.min(MAX_US, Math.max(0, Math.round(ms * 1000)));
    if (us > this.#maxUs) this.#maxUs = us;
    this.#counts[index(us)]!++;
    this.#total++;
  }

  /** The value at quantile q (0..1) in milliseconds: the middle of its bucket; 0 when empty. */
  quantileMs(q: number): number {
    if (this.#total === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.#total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) return Math.min(midpoint(i), this.#maxUs) / 1000;
    }
    return this.#maxUs / 1000;
  }

  /** The largest value recorded, exactly (to the microsecond). */
  maxMs(): number {
    return this.#maxUs / 1000;
  }
}

/** Values below 2·SUB map to themselves; above, to (power of two, top SUB_BITS+1 bits). */
function index(us: number): number {
  if (us < 2 * SUB) return us;
  const shift = 31 - Math.clz32(us) - SUB_BITS; // us >>> shift is in [SUB, 2·SUB)
  return shift * SUB + (us >>> shift);
}

function midpoint(i: number): number {
  if (i < 2 * SUB) return i;
  const shift = Math.floor(i / SUB) - 1;
  const mantissa = i - shift * SUB;
  return (mantissa + 0.5) * 2 ** shift;
}
