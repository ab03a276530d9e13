// The harness itself, against the real registry without skiff: when one of these fails, the
// end-to-end failures elsewhere are about the test machinery, not about skiff.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { Registry } from "./harness/registry.ts";
import { TokenIssuer } from "./harness/token-issuer.ts";
import { OciLayout, buildImage, buildIndex, pushImage, sha256, type ImageInfo, type IndexInfo } from "./harness/images.ts";
import { skopeoCopy, skopeoCopyResult, skopeoInspectRaw } from "./harness/skopeo.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { compareTrees } from "./harness/files.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let image: ImageInfo;
let index: IndexInfo;

beforeAll(async () => {
  registry = await Registry.start({ name: "harness-registry" });
  const layout = new OciLayout(tempDir("harness-layout"));
  image = buildImage(layout, { tag: "v1", seed: "harness", layers: 3 });
  index = buildIndex(layout, {
    tag: "multi",
    seed: "harness-multi",
    platforms: [
      { os: "linux", architecture: "amd64" },
      { os: "linux", architecture: "arm64" },
    ],
  });
  await pushImage(layout, "v1", `${registry.hostPort}/harness/app:v1`);
  await pushImage(layout, "multi", `${registry.hostPort}/harness/multi:latest`, { all: true });
});

afterAll(async () => {
  await registry?.stop();
  await teardown();
});

describe("harness against the registry directly", () => {
  test("push keeps digests: registry serves the layout's manifest and blobs", async () => {
    const res = await fetch(`${registry.url}/v2/harness/app/manifests/v1`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    expect(sha256(body)).toBe(image.manifest.digest);
    expect(body.equals(image.manifestBytes)).toBe(true);
    for (const layer of image.layers) {
      const b = Buffer.from(await (await fetch(`${registry.url}/v2/harness/app/blobs/${layer.digest}`)).arrayBuffer());
      expect(b.equals(image.layout.readBlob(layer.digest))).toBe(true);
      expect(readFileSync(registry.blobDataPath(layer.digest)).equals(b)).toBe(true);
    }
  });

  test("access log counts requests; stop/start keeps port and storage", async () => {
    const before = await registry.settledRequestCount();
    await fetch(`${registry.url}/v2/harness/app/tags/list`).then((r) => r.arrayBuffer());
    expect(await registry.settledRequestCount()).toBe(before + 1);
    expect(registry.accessLog().at(-1)?.path).toBe("/v2/harness/app/tags/list");
    await registry.stop();
    await expect(fetch(`${registry.url}/v2/`)).rejects.toThrow();
    await registry.start();
    const res = await fetch(`${registry.url}/v2/harness/app/manifests/v1`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  });

  test("two direct skopeo copies are byte-identical; index inspect --raw equals pushed bytes", async () => {
    const a = tempDir("direct-a");
    const b = tempDir("direct-b");
    await skopeoCopy(`docker://${registry.hostPort}/harness/app:v1`, `dir:${a}`);
    await skopeoCopy(`docker://${registry.hostPort}/harness/app:v1`, `dir:${b}`);
    const diff = compareTrees(a, b);
    expect(diff.onlyInA).toEqual([]);
    expect(diff.onlyInB).toEqual([]);
    expect(diff.different).toEqual([]);
    expect(readFileSync(join(a, "manifest.json")).equals(image.manifestBytes)).toBe(true);
    const raw = await skopeoInspectRaw(`${registry.hostPort}/harness/multi:latest`);
    expect(raw.equals(index.indexBytes)).toBe(true);
  });

  test("token auth: issuer tokens are accepted, wrong credentials are refused", async () => {
    const issuer = await TokenIssuer.start({
      users: { alice: "s3cret" },
      service: "skiff-e2e-registry",
      issuer: "skiff-e2e-issuer",
    });
    const authed = await Registry.start({
      name: "harness-token-registry",
      auth: { token: { realm: issuer.realm, service: "skiff-e2e-registry", issuer: "skiff-e2e-issuer", rootCertBundle: issuer.certPath } },
    });
    try {
      const anon = await fetch(`${authed.url}/v2/`);
      expect(anon.status).toBe(401);
      expect(anon.headers.get("www-authenticate")).toContain(issuer.realm);
      await pushImage(image.layout, "v1", `${authed.hostPort}/secure/app:v1`, { creds: "alice:s3cret" });
      const out = tempDir("token-direct");
      await skopeoCopy(`docker://${authed.hostPort}/secure/app:v1`, `dir:${out}`, { srcCreds: "alice:s3cret" });
      expect(readFileSync(join(out, "manifest.json")).equals(image.manifestBytes)).toBe(true);
      expect(issuer.requests.some((r) => r.granted)).toBe(true);
      const bad = await skopeoCopyResult(`docker://${authed.hostPort}/secure/app:v1`, `dir:${tempDir("token-bad")}`, {
        srcCreds: "alice:wrong",
      });
      expect(bad.code).not.toBe(0);
    } finally {
      await authed.stop();
      await issuer.stop();
    }
  }, 120_000);

  test("containerd pulls from the registry directly, and through a hosts.toml", async () => {
    const containerd = await Containerd.start();
    try {
      const ref = `${registry.hostPort}/harness/app:v1`;
      const r = await containerd.pull(ref);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      const images = await containerd.images();
      expect(images.find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
      // A hosts.toml whose mirror is the registry itself under another name (so containerd treats
      // it as a mirror and adds ?ns=, and the pull works without skiff).
      const hostsDir = tempDir("hosts");
      writeMirrorHostsToml(hostsDir, registry.hostPort, `http://localhost:${registry.port}`);
      const before = registry.accessLog().length;
      const r2 = await containerd.pull(ref, { hostsDir, ns: "other" });
      expect(r2.code, r2.stderr + r2.stdout).toBe(0);
      const lines = registry.accessLog().slice(before);
      expect(lines.length).toBeGreaterThan(0);
      expect(lines.every((l) => new URL(l.path, registry.url).searchParams.get("ns") === registry.hostPort)).toBe(true);
    } finally {
      await containerd.stop();
    }
  }, 180_000);
});
