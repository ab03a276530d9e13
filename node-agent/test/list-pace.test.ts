// How far a prefetch list runs ahead of the reads (node-agent/src/list-pace.ts).
import { describe, expect, test } from "vitest";
import { ListPace, LOOKAHEAD_BYTES } from "../src/list-pace.ts";

const MiB = 2 ** 20;
const list = Array.from({ length: 40 }, (_, i) => 100 + i); // chunk-table indexes 100..139

describe("ListPace", () => {
  test("a list is held back once LOOKAHEAD_BYTES of what it fetched is unread, and moves on as the reads take it", () => {
    const pace = new ListPace(list);
    const fits = LOOKAHEAD_BYTES / MiB;
    for (let i = 0; i < fits - 1; i++) pace.took(100 + i, MiB);
    expect(pace.full).toBe(false);
    pace.took(100 + fits - 1, MiB);
    expect(pace.full).toBe(true);
    // Reads of chunks the list does not hold, or of one not fetched, release nothing.
    expect(pace.saw(5)).toBe(false);
    expect(pace.saw(139)).toBe(false);
    expect(pace.full).toBe(true);
    // A read of a fetched chunk: it is no longer ahead.
    expect(pace.saw(101)).toBe(true);
    expect(pace.full).toBe(false);
    expect(pace.saw(101)).toBe(false); // read again: counted once
    pace.took(100 + fits, MiB);
    expect(pace.full).toBe(true);
    // A failed batch is no longer ahead.
    pace.dropped(100 + fits);
    expect(pace.full).toBe(false);
  });

  test("a fetched chunk the reads pass over while they need 64 others of the list no longer counts as ahead", () => {
    const long = Array.from({ length: 200 }, (_, i) => i);
    const pace = new ListPace(long);
    pace.took(0, LOOKAHEAD_BYTES); // never read on this node
    expect(pace.full).toBe(true);
    for (let i = 1; i <= 64; i++) pace.saw(i);
    expect(pace.full).toBe(true);
    expect(pace.saw(65)).toBe(true);
    expect(pace.full).toBe(false);
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
