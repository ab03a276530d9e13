// Growable columns of numbers in fixed pages of a typed array: a layer's tree holds one value per
// tar entry in each, hundreds of thousands of them. Pages never move, so growing never holds the
// old and the new copy at once (a doubling array would, for a moment, three times the data), and
// at most one page is spare.

const PAGE_SHIFT = 12;
const PAGE = 1 << PAGE_SHIFT;
const MASK = PAGE - 1;

type Typed = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array;

export class PagedArray<T extends Typed> {
  readonly #pages: T[] = [];
  #length = 0;

  constructor(
    private readonly make: (n: number) => T,
    /** Values per element: an element is `stride` consecutive values (e.g. 32 bytes of a digest). */
    readonly stride = 1,
  ) {}

  get length(): number {
    return this.#length;
  }

  /** Appends one element (all its values zero) and returns its index. */
  grow(): number {
    const i = this.#length++;
    if ((i & MASK) === 0) this.#pages.push(this.make(PAGE * this.stride));
    return i;
  }

  push(v: number): number {
    const i = this.grow();
    this.#pages[i >>> PAGE_SHIFT]![i & MASK] = v;
    return i;
  }

  get(i: number): number {
    return this.#pages[i >>> PAGE_SHIFT]![i & MASK]!;
  }

  set(i: number, v: number): void {
    this.#pages[i >>> PAGE_SHIFT]![i & MASK] = v;
  }

  /** The page holding element `i`, and where in it the element's values start. */
  slot(i: number): [page: T, at: number] {
    return [this.#pages[i >>> PAGE_SHIFT]!, (i & MASK) * this.stride];
  }
}

export const u32Column = () => new PagedArray((n) => new Uint32Array(n));
export const f64Column = () => new PagedArray((n) => new Float64Array(n));
