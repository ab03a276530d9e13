// One target's campaign: `inputs` mutants of its seeds, each run to completion. Input n is made
// from (seed, n) alone, so a finding is replayed by its number (`npm run fuzz -- --target T --only N`).
import { mutate, Prng } from "./mutate.ts";
import type { Seeds } from "./seeds.ts";
import type { Target } from "./targets.ts";

export interface Finding {
  input: number;
  error: string;
  /** The input, base64, to turn into a regression test. */
  bytes: string;
}

export interface CampaignResult {
  target: string;
  inputs: number;
  accepted: number;
  refused: number;
  /** Inputs that threw something other than a refusal; the first few are in `findings`. */
  crashes: number;
  findings: Finding[];
  slowestMs: number;
  maxRssBytes: number;
}

export interface CampaignOptions {
  inputs: number;
  seed: number;
  /** Run only this input number. */
  only?: number;
  /** Told every so many inputs how many are done. */
  onProgress?: (done: number) => void;
  /** Told each input's number before it runs (a watchdog names the input that hangs). */
  onInput?: (n: number) => void;
}

/** Findings kept per target: past this the campaign goes on counting crashes but keeps no more inputs. */
const MAX_FINDINGS = 20;

export async function runCampaign(target: Target, seeds: Seeds, o: CampaignOptions): Promise<CampaignResult> {
  const corpus = target.seeds(seeds);
  const result: CampaignResult = { target: target.name, inputs: 0, accepted: 0, refused: 0, crashes: 0, findings: [], slowestMs: 0, maxRssBytes: 0 };
  const first = o.only ?? 0;
  const end = o.only !== undefined ? o.only + 1 : o.inputs;
  for (let n = first; n < end; n++) {
    const input = inputOf(corpus, target, o.seed, n);
    o.onInput?.(n);
    const t0 = performance.now();
    try {
      await target.run(input);
      result.accepted++;
    } catch (err) {
      if (target.refusals.some((kind) => err !== null && typeof err === "object" && err.constructor === kind)) {
        result.refused++;
      } else {
        const error = err instanceof Error ? `${err.name}: ${err.message}` : `non-Error thrown: ${String(err)}`;
        result.crashes++;
        if (result.findings.length < MAX_FINDINGS) result.findings.push({ input: n, error: error.slice(0, 300), bytes: Buffer.from(input).toString("base64") });
      }
    }
    result.slowestMs = Math.max(result.slowestMs, performance.now() - t0);
    result.inputs++;
    if (n % 1000 === 999) {
      result.maxRssBytes = Math.max(result.maxRssBytes, process.memoryUsage.rss());
      o.onProgress?.(result.inputs);
    }
  }
  result.maxRssBytes = Math.max(result.maxRssBytes, process.memoryUsage.rss());
  return result;
}

/** Input n of a target's campaign: the seeds themselves first, then mutants. */
export function inputOf(corpus: Uint8Array[], target: Target, seed: number, n: number): Uint8Array {
  if (n < corpus.length) return corpus[n]!;
  return (target.mutate ?? mutate)(corpus, new Prng(seed * 1_000_003 + n), target.maxLength);
}
