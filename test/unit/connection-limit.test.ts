import { describe, expect, it } from "vitest";
import { AsyncLocalStorage } from "node:async_hooks";
import { limitConnections } from "../../src/util/connection-limit.ts";

/** A fetch whose responses stream until the test ends them, counting how many are open. */
function fakeFetch() {
  let open = 0;
  let peak = 0;
  const ends: (() => void)[] = [];
  const fetchImpl = (async () => {
    open++;
    peak = Math.max(peak, open);
    let finish!: () => void;
    const ended = new Promise<void>((r) => (finish = r));
    ends.push(finish);
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        await ended;
        open--;
        c.enqueue(new Uint8Array([1]));
        c.close();
      },
      cancel() {
        open--;
      },
    });
    return new Response(body);
  }) as unknown as typeof fetch;
  return { fetchImpl, ends, peak: () => peak };
}

describe("limitConnections", () => {
  it("keeps at most max bodies open and starts waiting requests in order as bodies finish", async () => {
    const f = fakeFetch();
    const limited = limitConnections(f.fetchImpl, 2);
    const started: number[] = [];
    const responses = [0, 1, 2, 3].map((i) => limited("http://x/").then((r) => (started.push(i), r)));
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual([0, 1]);
    f.ends[0]!();
    expect(await (await responses[0]!).arrayBuffer()).toHaveProperty("byteLength", 1);
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual([0, 1, 2]);
    await (await responses[1]!).body!.cancel();
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toEqual([0, 1, 2, 3]);
    f.ends.slice(2).forEach((end) => end());
    await Promise.all(responses.slice(2).map(async (r) => (await r).arrayBuffer()));
    expect(f.peak()).toBe(2);
  });

  it("frees the slot of a request that failed and of a response without a body", async () => {
    let calls = 0;
    const limited = limitConnections((async () => {
      calls++;
      if (calls === 1) throw new TypeError("fetch failed");
      return new Response(null, { status: 204 });
    }) as unknown as typeof fetch, 1);
    await expect(limited("http://x/")).rejects.toThrow("fetch failed");
    expect((await limited("http://x/")).status).toBe(204);
    expect((await limited("http://x/")).status).toBe(204);
  });

  it("with a scope, counts per scope as Workers count per invocation: 6 each, whatever other invocations hold", async () => {
    const f = fakeFetch();
    // As src/runtime/worker.ts scopes it: each invocation runs in its own async context.
    const invocation = new AsyncLocalStorage<object>();
    const limited = limitConnections(f.fetchImpl, 6, () => invocation.getStore());
    const started = [0, 0];
    const run = (i: number) =>
      invocation.run({}, () =>
        Array.from({ length: 8 }, async () => {
          await new Promise((r) => setTimeout(r, 1)); // later work of the same invocation, as in waitUntil
          const res = await limited("http://x/");
          started[i]!++;
          return res;
        }),
      );
    const responses = [...run(0), ...run(1)];
    await new Promise((r) => setTimeout(r, 20));
    expect(started).toEqual([6, 6]);
    expect(f.peak()).toBe(12);
    f.ends.forEach((end) => end());
    await Promise.all(responses.slice(0, 6).map(async (r) => (await r).arrayBuffer()));
    await Promise.all(responses.slice(8, 14).map(async (r) => (await r).arrayBuffer()));
    await new Promise((r) => setTimeout(r, 20));
    expect(started).toEqual([8, 8]);
    f.ends.forEach((end) => end());
    await Promise.all(responses.map(async (r) => (await r).arrayBuffer().catch(() => null)));
  });

  it("without a scope, one count for every caller", async () => {
    const f = fakeFetch();
    const invocation = new AsyncLocalStorage<object>();
    const limited = limitConnections(f.fetchImpl, 6);
    let started = 0;
    const responses = [0, 1].flatMap(() => invocation.run({}, () => Array.from({ length: 4 }, () => limited("http://x/").then((r) => (started++, r)))));
    await new Promise((r) => setTimeout(r, 20));
    expect(started).toBe(6);
    f.ends.forEach((end) => end());
    await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => (await responses[i]!).arrayBuffer()));
    await new Promise((r) => setTimeout(r, 10));
    expect(started).toBe(8);
    f.ends.forEach((end) => end());
    await Promise.all(responses.map(async (r) => (await r).arrayBuffer().catch(() => null)));
    expect(f.peak()).toBe(6);
  });
});
