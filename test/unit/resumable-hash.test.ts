import { describe, expect, it } from "vitest";
import { createHash } from "node:crypto";
import { ResumableHash } from "../../src/hash/resumable.ts";

describe("ResumableHash", () => {
  it("taken up from its JSON state at any split, in another object, gives the one-pass digest", () => {
    const data = new Uint8Array(10_000).map((_, i) => (i * 131 + 7) & 255);
    for (const algorithm of ["sha256", "sha512"] as const) {
      const want = createHash(algorithm).update(data).digest("hex");
      for (const splits of [[0], [64], [1000, 4096], [1, 2, 3, 5000, 9999], [10_000]]) {
        let h = ResumableHash.start(algorithm);
        let at = 0;
        for (const split of [...splits, data.length]) {
          h.update(data.subarray(at, split));
          at = split;
          h = ResumableHash.resume(JSON.parse(JSON.stringify(h.state())));
        }
        expect(h.length).toBe(data.length);
        expect(h.hex(), `${algorithm} split at ${splits.join(",")}`).toBe(want);
      }
    }
  });

  it("refuses a state that can't be one", () => {
    const state = ResumableHash.start("sha256").state();
    expect(() => ResumableHash.resume({ ...state, words: [1, 2, 3] })).toThrow("not a hash state");
    expect(() => ResumableHash.resume({ ...state, length: 10, pending: "" })).toThrow("not a hash state");
  });
});
