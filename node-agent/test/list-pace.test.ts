// How far a prefetch list runs ahead of the reads (node-agent/src/list-pace.ts).
import { describe, expect, test } from "vitest";
import { ListPace, LOOKAHEAD_BYTES } from "../src/list-pace.ts";

const MiB = 2 ** 20;
const list = Array.from({ length: 40 }, (_, i) => 100 + i); // chunk-table indexes 100..139

describe("ListPace", () => {
  test("a list is held back once it is LOOKAHEAD_BYTES past the furthest place the reads reached, and moves on with them", () => {
    const pace = new ListPace(list);
    const perChunk = MiB;
    const fits = LOOKAHEAD_BYTES / perChunk;
    for (let place = 0; place < fits - 1; place++) pace.took(place, perChunk);
    expect(pace.full).toBe(false);
    pace.took(fits - 1, perChunk);
    expect(pace.full).toBe(true);
    // A read of the chunk at place 1: places 0 and 1 are behind the reads now.
    expect(pace.saw(101)).toBe(true);
    expect(pace.full).toBe(false);
    pace.took(fits, perChunk);
    pace.took(fits + 1, perChunk);
    expect(pace.full).toBe(true);
    // A failed batch is no longer ahead.
    pace.dropped(fits + 1);
    expect(pace.full).toBe(false);
    // Reads of chunks the list does not hold, or of one already seen, move nothing.
    expect(pace.saw(5)).toBe(false);
    expect(pace.saw(101)).toBe(false);
  });

  test("off track once most of the last 16 distinct chunks read are not in the list, on track again when they are", () => {
    const pace = new ListPace(list);
    for (let i = 0; i < 8; i++) pace.saw(100 + i);
    for (let i = 0; i < 8; i++) pace.saw(i);
    expect(pace.offTrack).toBe(false); // 8 of 16: half still matches
    expect(pace.saw(8)).toBe(true); // the ninth stray tips it
    expect(pace.offTrack).toBe(true);
    for (let i = 0; i < 8; i++) pace.saw(120 + i);
    expect(pace.offTrack).toBe(false);
  });
});
