import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir } from "../../src/format/model.ts";
import { fetchBootstrap } from "../src/bootstrap-client.ts";

const BODY = encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs: [], chunks: [], root: newDir() });
const DIGEST = `sha256:${createHash("sha256").update(BODY).digest("hex")}`;
const MANIFEST = `sha256:${"cd".repeat(32)}`;

let pending202 = 0;
let digestHeader = DIGEST;
let seen: string[] = [];
let server: Server;
let proxy: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    seen.push(req.url ?? "");
    if (pending202 > 0) {
      pending202--;
      res.writeHead(202, { "retry-after": "0", "content-type": "application/json" }).end('{"status":"converting","retryAfter":0}');
      return;
    }
    res
      .writeHead(200, { "docker-content-digest": digestHeader, "skiff-manifest-digest": MANIFEST, "skiff-params": "v1-c20-none", "content-length": BODY.length })
      .end(Buffer.from(BODY));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  proxy = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});
beforeEach(() => {
  pending202 = 0;
  digestHeader = DIGEST;
  seen = [];
});

describe("fetchBootstrap", () => {
  test("waits out 202s, then returns the verified, decoded bootstrap and the manifest digest to pin", async () => {
    pending202 = 2;
    const got = await fetchBootstrap(proxy, "e2e/app", "v1", { platform: "linux/arm64", timeoutMs: 5_000 });
    expect(seen).toEqual(Array(3).fill("/v2/e2e/app/_skiff/bootstrap/v1?platform=linux%2Farm64"));
    expect(got).toMatchObject({ digest: DIGEST, manifestDigest: MANIFEST, params: "v1-c20-none" });
    expect(got.bootstrap.kind).toBe("image");
  });

  test("a body that does not match Docker-Content-Digest is rejected", async () => {
    digestHeader = `sha256:${"00".repeat(32)}`;
    await expect(fetchBootstrap(proxy, "e2e/app", "@" + MANIFEST, { timeoutMs: 5_000 })).rejects.toThrow(/does not match Docker-Content-Digest/);
    expect(seen).toEqual([`/v2/e2e/app/_skiff/bootstrap/${MANIFEST}`]);
  });

  test("202 forever ends at the timeout", async () => {
    pending202 = 1_000_000;
    const t0 = Date.now();
    await expect(fetchBootstrap(proxy, "e2e/app", "v1", { timeoutMs: 400 })).rejects.toThrow(/no bootstrap within 400 ms/);
    expect(Date.now() - t0).toBeLessThan(1_500);
  });
});
