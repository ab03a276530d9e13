// The V8 settings `skiff convert` applies while it runs (src/runtime/node-conversion-settings.ts).
import { describe, expect, it } from "vitest";
import { tuneForConversion } from "../../src/runtime/node-conversion-settings.ts";

/** A weak reference to an object nothing else holds, made in a job of its own. */
async function unheld(): Promise<WeakRef<object>> {
  const ref = new WeakRef({ payload: new Array(1000).fill(1) });
  // A WeakRef's target lives until the job that made it ends.
  await new Promise((resolve) => setTimeout(resolve, 0));
  return ref;
}

describe("tuneForConversion", () => {
  it("hands back a function that collects in full, in a process started without --expose-gc", async () => {
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
    const gc = tuneForConversion();
    expect(typeof gc).toBe("function");
    const ref = await unheld();
    gc!();
    expect(ref.deref()).toBeUndefined();
  });
});
