// Upstream token auth: a registry that only accepts Bearer tokens from the test's token issuer
// (on another port, so skiff needs --allow-host for it). skiff holds the credentials; its clients
// pull anonymously.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { TokenIssuer } from "./harness/token-issuer.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildImage, pushImage, MT, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy, skopeoCopyResult } from "./harness/skopeo.ts";
import { compareTrees, listAllPaths } from "./harness/files.ts";
import { transfer } from "./harness/http.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

const SERVICE = "skiff-e2e-registry";
const ISSUER = "skiff-e2e-token-issuer";
const USER = "alice";
const PASSWORD = "correct horse battery staple";
const REF = "private/app:v1";

let issuer: TokenIssuer;
let registry: Registry;
let image: ImageInfo;
const skiffs: Skiff[] = [];

beforeAll(async () => {
  issuer = await TokenIssuer.start({ users: { [USER]: PASSWORD }, service: SERVICE, issuer: ISSUER });
  registry = await Registry.start({
    name: "token-registry",
    auth: { token: { realm: issuer.realm, service: SERVICE, issuer: ISSUER, rootCertBundle: issuer.certPath } },
  });
  const layout = new OciLayout(tempDir("token-layout"));
  image = buildImage(layout, { tag: "v1", seed: "token-auth", layers: 2, filesPerLayer: 3 });
  await pushImage(layout, "v1", `${registry.hostPort}/${REF}`, { creds: `${USER}:${PASSWORD}` });
});

afterAll(async () => {
  for (const s of skiffs) await s.stop();
  await registry?.stop();
  await issuer?.stop();
  await teardown();
});

async function startSkiff(password: string): Promise<Skiff> {
  const s = await Skiff.start({
    upstream: registry.url,
    upstreamUser: USER,
    upstreamPassword: password,
    allowHosts: [issuer.hostPort],
    // Serve what these credentials reach to anonymous clients (the default for an upstream with credentials is private).
    extraArgs: ["--upstream-public"],
  });
  skiffs.push(s);
  return s;
}

describe("upstream token auth", () => {
  test("the registry refuses anonymous pulls (the setup really needs auth)", async () => {
    const res = await fetch(`${registry.url}/v2/${REF.replace(":", "/manifests/")}`, { headers: { accept: MT.manifest } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Bearer /);
    const anon = await skopeoCopyResult(`docker://${registry.hostPort}/${REF}`, `dir:${tempDir("anon")}`);
    expect(anon.code).not.toBe(0);
  });

  test("skopeo through skiff (with upstream credentials) is byte-identical to a direct authenticated copy", async () => {
    const skiff = await startSkiff(PASSWORD);
    const direct = tempDir("token-direct");
    await skopeoCopy(`docker://${registry.hostPort}/${REF}`, `dir:${direct}`, { srcCreds: `${USER}:${PASSWORD}` });
    const tokensBefore = issuer.requests.filter((r) => r.granted).length;
    const via = tempDir("token-via");
    await skopeoCopy(`docker://${skiff.hostPort}/${REF}`, `dir:${via}`);
    const diff = compareTrees(direct, via);
    expect(diff.onlyInA).toEqual([]);
    expect(diff.onlyInB).toEqual([]);
    expect(diff.different).toEqual([]);
    expect(diff.same.length).toBe(image.layers.length + 3); // manifest.json, version, config, layers
    const granted = issuer.requests.slice().filter((r) => r.granted);
    expect(granted.length).toBeGreaterThan(tokensBefore);
    expect(granted.at(-1)?.user).toBe(USER);
    expect(granted.at(-1)?.scopes.join(" ")).toContain("repository:private/app:pull");
  }, 120_000);

  test("wrong upstream credentials: the pull fails and no content is served or cached", async () => {
    const skiff = await startSkiff("wrong password");
    const out = tempDir("token-wrong");
    const r = await skopeoCopyResult(`docker://${skiff.hostPort}/${REF}`, `dir:${out}`, { timeoutMs: 60_000 });
    expect(r.code).not.toBe(0);

    const manifest = await transfer(`${skiff.url}/v2/${REF.replace(":", "/manifests/")}`, { headers: { accept: MT.manifest } });
    expect(manifest.status).toBeGreaterThanOrEqual(400);
    expect(manifest.body.includes(image.manifestBytes)).toBe(false);
    expect(manifest.body.toString("utf8")).not.toContain(image.config.digest);

    const layer = image.layers[0]!;
    const blob = await transfer(`${skiff.url}/v2/private/app/blobs/${layer.digest}`);
    expect(blob.status).toBeGreaterThanOrEqual(400);
    expect(blob.body.length).toBeLessThan(4096);

    const hexes = [image.manifest.digest, image.config.digest, ...image.layers.map((l) => l.digest)].map((d) => d.slice(7));
    expect(listAllPaths(skiff.dataDir).filter((p) => hexes.some((h) => p.includes(h)))).toEqual([]);
    expect(issuer.requests.some((req) => !req.granted)).toBe(true);
  }, 90_000);
});
