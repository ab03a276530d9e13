// The harness's heap limit for workerd (WorkerOptions.heapLimitMb, workerd-v8-flags.sh): with it, a
// Worker that keeps more objects alive than the limit ends workerd with V8's heap-limit error; without
// it, the same Worker finishes. So the tests that convert within a Worker's 128 MB (worker-entry-limit)
// run under a limit that is really there.
import { afterAll, describe, expect, test } from "vitest";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { WorkerSkiff } from "./harness/worker.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

// Answers /v2/ (the harness's readiness check) and /hold?mb=N: keeps about N MB of small objects alive at once.
const HOLDER = `
export default {
  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === "/v2/") return new Response("{}");
    const mb = Number(url.searchParams.get("mb"));
    const held = [];
    // An object of one number field in an array slot: about 32 bytes each.
    for (let i = 0; i < mb * 32768; i++) held.push({ i });
    return new Response("held " + held.length);
  },
};
`;

const workers: WorkerSkiff[] = [];

async function holder(heapLimitMb?: number): Promise<WorkerSkiff> {
  const dir = tempDir("heap-limit");
  const script = join(dir, "holder.mjs");
  writeFileSync(script, HOLDER);
  const w = await WorkerSkiff.start({ script, ...(heapLimitMb ? { heapLimitMb } : {}) });
  workers.push(w);
  return w;
}

afterAll(async () => {
  for (const w of workers) await w.stop();
  await teardown();
}, 60_000);

describe("workerd's heap limit in the harness", () => {
  test("a Worker holding more than the limit ends workerd with V8's heap-limit error; under it, or without a limit, it answers", async () => {
    const limited = await holder(64);
    const small = await fetch(`${limited.url}/hold?mb=16`);
    expect(small.status).toBe(200);
    expect(await small.text()).toBe(`held ${16 * 32768}`);
    const big = await fetch(`${limited.url}/hold?mb=256`).then(
      (res) => res.status,
      () => "no answer",
    );
    expect(big).not.toBe(200);
    await expect.poll(() => limited.log(), { timeout: 10_000 }).toMatch(/Reached heap limit|JavaScript heap out of memory/);

    const unlimited = await holder();
    const res = await fetch(`${unlimited.url}/hold?mb=256`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`held ${256 * 32768}`);
  }, 120_000);
});
