// V8 settings for a process that converts layers (`skiff convert`, and `skiff serve`, whose first
// requests for an image convert it), set while it runs instead of given when it starts. V8 takes the compiled code Node ships for its own modules, and for a new
// worker's bootstrap, only under the flags that code was compiled with: with any V8 flag given at
// start, Node compiled its modules from source, about 40 ms more before converting and 40 ms more
// before the zstd decoder's worker ran (docs/benchmarks.md, "Converting layers"). Set once the
// converter's modules have loaded and that worker has started, the flags cost neither.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** V8's default interrupt budget: bytecode a function runs between checks whether to optimise it. */
const DEFAULT_INTERRUPT_BUDGET = 66 * 1024;

/**
 * Applies the settings and returns a function that collects garbage in full, or undefined where
 * the runtime gives none.
 *
 * A conversion is a new process that runs for seconds. With V8's default budget, TurboFan compiled
 * about 150 of its functions, 0.6 s of CPU on the core the decoder and the writes need; with a
 * budget 4 times larger, 90 functions and 0.3 s, and a layer converted about 4 % sooner
 * (docs/benchmarks.md, "Per-entry costs"). Only V8 before 12 (Node before 22) has the flag; later
 * ones print an error for it, so it is not given to them.
 */
export function tuneForConversion(): (() => void) | undefined {
  raiseInterruptBudget();
  // `gc` is given to contexts made after the flag: a new one hands it over.
  setFlagsFromString("--expose-gc");
  try {
    const gc: unknown = runInNewContext("gc");
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The larger interrupt budget alone, for `skiff serve`: a new edge process meeting its first image
 * converts it while TurboFan compiles, on the same two cores, and answered a cold image bootstrap
 * in 0.95 of the time with 0.3 s less CPU (docs/benchmarks.md, "A cold edge against a warm one"). A
 * long-running server's code is optimised a little later, then as before.
 */
export function raiseInterruptBudget(): void {
  if (v8Major() < 12) setFlagsFromString(`--interrupt-budget=${4 * DEFAULT_INTERRUPT_BUDGET}`);
}

function v8Major(): number {
  return Number.parseInt(process.versions.v8 ?? "", 10) || 0;
}
