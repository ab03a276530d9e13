// The Worker entry's configuration from vars: a mistake is answered on every request with an OCI
// error naming the var (a Worker can't refuse to start), and a good config serves.
import { describe, expect, it } from "vitest";
import worker, { type WorkerEnv } from "../../src/runtime/worker.ts";
import type { R2BucketLike } from "../../src/store/r2.ts";

const noBucket = {} as R2BucketLike; // never reached by these requests
const ctx = { waitUntil() {}, passThroughOnException() {}, props: {} };

async function answer(vars: Partial<WorkerEnv>): Promise<{ status: number; body: string }> {
  const env = { STORE: noBucket, ...vars } as WorkerEnv;
  const res = await worker.fetch(new Request("http://skiff.test/v2/"), env, ctx);
  return { status: res.status, body: await res.text() };
}

describe("Worker config from vars", () => {
  it.each([
    [{}, /set the UPSTREAM var/],
    [{ UPSTREAM: "ftp://r.example" }, /must be a bare origin/],
    [{ UPSTREAM: "http://r.example", ACCESS_MODE: "bogus" }, /ACCESS_MODE must be open or passthrough/],
    [{ UPSTREAM: "http://r.example", CONVERT_WAIT: "soon" }, /CONVERT_WAIT must be a whole number/],
    [{ UPSTREAM: "http://r.example", MAX_LAYER_SIZE: "lots" }, /MAX_LAYER_SIZE must be a size/],
    [{ UPSTREAM: "http://r.example", CONVERT_STEP: "0" }, /CONVERT_STEP must be a size/],
    [{ UPSTREAM: "http://r.example", CONVERT_STEP: "-5m" }, /CONVERT_STEP must be a size/],
    [{ SKIFF_CONFIG: '{"upstreams": {}}' }, /upstreams: name at least one upstream/],
    [{ UPSTREAM: "http://r.example", UPSTREAM_USER: "u", UPSTREAM_PASSWORD: "secret-pass-1" }, /not public/],
  ])("answers 500 naming the mistake for %j", async (vars, message) => {
    const { status, body } = await answer(vars);
    expect(status).toBe(500);
    expect(JSON.parse(body).errors[0].message).toMatch(message);
    expect(body).not.toContain("secret-pass-1");
  });

  it("serves /v2/ with a good config", async () => {
    expect(await answer({ UPSTREAM: "http://r.example" })).toEqual({ status: 200, body: "{}" });
  });
});
