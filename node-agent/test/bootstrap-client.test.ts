import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, test } from "vitest";
import { encodeBootstrap } from "../../src/format/encode.ts";
import { newDir } from "../../src/format/model.ts";
import { fetchBootstrap, MAX_BOOTSTRAP_BYTES } from "../../src/client/lazy-api.ts";

const BODY = encodeBootstrap({ kind: "image", codec: 0, chunkShift: 20, platform: "linux/amd64", blobs: [], chunks: [], root: newDir() });
const DIGEST = `sha256:${createHash("sha256").update(BODY).digest("hex")}`;
const MANIFEST = `sha256:${"cd".repeat(32)}`;

let pending202 = 0;
let digestHeader = DIGEST;
/** Bytes of an oversized body to send instead of the bootstrap; announced as its length when `announce`. */
let oversized: { bytes: number; announce: boolean } | null = null;
let oversizedSent = 0;
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
    if (oversized) {
      const { bytes, announce } = oversized;
      res.writeHead(200, { "docker-content-digest": DIGEST, "skiff-manifest-digest": MANIFEST, "skiff-params": "v1-c20-none", ...(announce && { "content-length": bytes }) });
      const piece = Buffer.alloc(4 * 2 ** 20);
      const more = () => {
        while (oversizedSent < bytes && !res.destroyed) {
          oversizedSent += piece.length;
          if (!res.write(piece)) return void res.once("drain", more);
        }
        res.end();
      };
      res.on("error", () => {});
      return more();
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
  oversized = null;
  oversizedSent = 0;
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

  test("a body past the size limit is refused as it arrives, announced or not, without reading the rest", { timeout: 30_000 }, async () => {
    oversized = { bytes: 4 * MAX_BOOTSTRAP_BYTES, announce: true };
    await expect(fetchBootstrap(proxy, "e2e/app", "v1", { timeoutMs: 20_000 })).rejects.toThrow(`a bootstrap of ${4 * MAX_BOOTSTRAP_BYTES} bytes is larger than the agent accepts`);
    expect(oversizedSent).toBeLessThan(MAX_BOOTSTRAP_BYTES);
    oversized = { bytes: 4 * MAX_BOOTSTRAP_BYTES, announce: false };
    oversizedSent = 0;
    await expect(fetchBootstrap(proxy, "e2e/app", "v1", { timeoutMs: 20_000 })).rejects.toThrow(/the bootstrap is larger than the agent accepts/);
    expect(oversizedSent).toBeLessThan(2 * MAX_BOOTSTRAP_BYTES);
  });
});
