// A short fuzz campaign per target (npm run fuzz runs the long one): every mutant of real layers,
// bootstraps and header values is either accepted or refused with the target's own error.
import { beforeAll, describe, expect, test } from "vitest";
import { inputOf, runCampaign } from "../../fuzz/campaign.ts";
import { makeSeeds, type Seeds } from "../../fuzz/seeds.ts";
import { TARGETS, type Target } from "../../fuzz/targets.ts";

const INPUTS = 1500;
let seeds: Seeds;

beforeAll(async () => {
  seeds = await makeSeeds();
}, 60_000);

describe("fuzz (short campaign)", () => {
  test.each(TARGETS.map((t) => [t.name, t] as const))("%s: no input escapes as anything but a refusal", { timeout: 120_000 }, async (_name, target) => {
    const r = await runCampaign(target, seeds, { inputs: INPUTS, seed: 1 });
    expect(r.findings.map((f) => `#${f.input}: ${f.error}`)).toEqual([]);
    expect(r.inputs).toBe(INPUTS);
    expect(r.accepted + r.refused).toBe(INPUTS);
  });
});

describe("the campaign itself", () => {
  // A parser with a planted bug: it reads past its input when byte 3 is 0xff.
  const planted: Target = {
    name: "planted",
    maxLength: 64,
    seeds: () => [new Uint8Array([1, 2, 3, 4, 5, 6])],
    run: (input) => {
      if (input.length < 4) throw new RangeError("too short");
      if (input[3] === 0xff) return (undefined as unknown as number[]).length;
      return input.length;
    },
    refusals: [RangeError],
  };

  test("finds a planted bug, names the input, and replays it alone", async () => {
    const r = await runCampaign(planted, seeds, { inputs: 3000, seed: 7 });
    expect(r.crashes).toBeGreaterThan(0);
    expect(r.refused).toBeGreaterThan(0); // the planted refusal is not a finding
    const first = r.findings[0]!;
    expect(first.error).toMatch(/^TypeError: /);
    expect(Buffer.from(inputOf(planted.seeds(seeds), planted, 7, first.input)).toString("base64")).toBe(first.bytes);
    const again = await runCampaign(planted, seeds, { inputs: 3000, seed: 7, only: first.input });
    expect(again.inputs).toBe(1);
    expect(again.findings.map((f) => f.input)).toEqual([first.input]);
  });
});

describe("JSON mutants", () => {
  const config = () => TARGETS.find((t) => t.name === "config")!;

  test("mostly parse, so the loader behind the parser is what they reach; the same number gives the same mutant", () => {
    const target = config();
    const corpus = target.seeds(seeds);
    const texts = Array.from({ length: 2000 }, (_, i) => new TextDecoder().decode(inputOf(corpus, target, 1, corpus.length + i)));
    const parsed = texts.filter((t) => {
      try {
        JSON.parse(t);
        return true;
      } catch {
        return false;
      }
    });
    // One in four is a byte mutant, which mostly breaks the syntax; the rest are documents.
    expect(parsed.length).toBeGreaterThan(texts.length * 0.6);
    expect(new Set(texts).size).toBeGreaterThan(texts.length * 0.5);
    const seedTexts = new Set(corpus.map((s) => new TextDecoder().decode(s)));
    expect(parsed.filter((t) => seedTexts.has(t)).length).toBeLessThan(texts.length * 0.1);
    expect(new TextDecoder().decode(inputOf(corpus, target, 1, 1234))).toBe(texts[1234 - corpus.length]);
  });
});
