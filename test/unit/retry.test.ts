import { describe, expect, it } from "vitest";
import { parseRetryAfter } from "../../src/util/retry-after.ts";
import { sleep } from "../../src/util/sleep.ts";

describe("parseRetryAfter", () => {
  const now = Date.parse("Tue, 01 Oct 2024 12:00:00 GMT");
  it("reads delay-seconds and HTTP dates as milliseconds from now", () => {
    expect(parseRetryAfter("5", now)).toBe(5000);
    expect(parseRetryAfter(" 0 ", now)).toBe(0);
    expect(parseRetryAfter("Tue, 01 Oct 2024 12:02:00 GMT", now)).toBe(120_000);
    expect(parseRetryAfter("Tue, 01 Oct 2024 11:00:00 GMT", now)).toBe(0); // past: at once
  });
  it("is null when missing or unreadable", () => {
    for (const v of [null, undefined, "", "  ", "soon", "-5", "1234567890", "0x10"]) expect(parseRetryAfter(v, now), String(v)).toBeNull();
  });
});

describe("sleep", () => {
  it("resolves after the time, and rejects with the abort reason at once", async () => {
    const t0 = Date.now();
    await sleep(30);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    const controller = new AbortController();
    const reason = new Error("stop");
    const slept = sleep(60_000, controller.signal);
    controller.abort(reason);
    await expect(slept).rejects.toBe(reason);
    await expect(sleep(10, AbortSignal.abort(reason))).rejects.toBe(reason);
  });
});
