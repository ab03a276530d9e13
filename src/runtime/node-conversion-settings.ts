// V8 settings for the processes that convert layers (`skiff convert`, and `skiff serve`, which
// converts an image when it is first asked for), set while they run instead of given at start. V8
// takes the compiled code Node ships for its own modules, and for a new worker's bootstrap, only
// under the flags that code was compiled with: with any V8 flag given at start, Node compiled its
// modules from source, about 40 ms more before converting and 40 ms more before the zstd decoder's
// worker ran (docs/benchmarks.md, "Converting layers"). Set once the modules have loaded (and, for
// convert, that worker has started), the flags cost neither.
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
 * `skiff serve`'s settings, once its modules are loaded (docs/benchmarks.md, "A cold edge against a
 * warm one"):
 * - The larger interrupt budget: a new edge process meeting its first image converts it while
 *   TurboFan compiles, on the same cores. It answered a cold image bootstrap in 0.96 of the time,
 *   with 0.4 s less CPU. A long-running server's code is optimised a little later, then as before.
 * - The old generation let grow to 4 times what is live after a full collection, V8's largest
 *   factor, which it picks itself for a busy new process. A long-running edge meeting a new image
 *   had been given a far smaller one (a limit of 29 MB over 13 MB live), and marked its whole heap
 *   again as soon as one marking ended: with the setting it answered in 0.86 of the time, with
 *   0.75 s less CPU and a peak 16 to 40 MB higher; a new process in 0.96. A factor of 3 cost a
 *   new process a tenth.
 */
export function tuneForServing(): void {
  raiseInterruptBudget();
  if (!givenAtStart("heap-growing-percent")) setFlagsFromString(`--heap-growing-percent=${SERVER_HEAP_GROWING_PERCENT}`);
}

/** Whether Node was started with V8 flag `name` (either spelling): the operator's value stays. */
function givenAtStart(name: string): boolean {
  const spellings = [`--${name}`, `--${name.replaceAll("-", "_")}`];
  return process.execArgv.some((arg) => spellings.some((flag) => arg === flag || arg.startsWith(`${flag}=`)));
}

/** Old generation growth after a full collection, in percent of what is live: a factor of 4. */
const SERVER_HEAP_GROWING_PERCENT = 300;

function raiseInterruptBudget(): void {
  if (v8Major() < 12) setFlagsFromString(`--interrupt-budget=${4 * DEFAULT_INTERRUPT_BUDGET}`);
}

function v8Major(): number {
  return Number.parseInt(process.versions.v8 ?? "", 10) || 0;
}
