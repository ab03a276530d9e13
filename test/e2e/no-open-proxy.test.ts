// skiff contacts only its configured upstream. A trap listener on 127.0.0.2 must see no connection
// while repository names, containerd's ?ns= query, storage redirects and token realms point at it.
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createNetServer, connect, type Server as NetServer } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { Registry } from "./harness/registry.ts";
import { Skiff } from "./harness/skiff.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { transfer } from "./harness/http.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let trap: NetServer;
let trapPort = 0;
let trapConnections = 0;
let registry: Registry;
let skiff: Skiff;
let image: ImageInfo;
// A small upstream of our own whose blob answers redirect to the trap and whose manifest answers
// name the trap as token realm: behaviour a real registry shows only when misconfigured or hostile.
let hostile: HttpServer;
let hostileSkiff: Skiff;

const listen = (server: NetServer | HttpServer, host: string) =>
  new Promise<number>((resolve) => server.listen(0, host, () => resolve((server.address() as { port: number }).port)));

beforeAll(async () => {
  trap = createNetServer((socket) => {
    trapConnections++;
    socket.destroy();
  });
  trapPort = await listen(trap, "127.0.0.2");

  registry = await Registry.start({ name: "trap-registry" });
  const layout = new OciLayout(tempDir("trap-layout"));
  image = buildImage(layout, { tag: "v1", seed: "no-open-proxy", layers: 1, filesPerLayer: 2, fileSize: 4096 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/app:v1`);
  skiff = await Skiff.start({ upstream: registry.url });

  hostile = createHttpServer((req, res) => {
    if (req.url === "/v2/") return res.end("{}");
    if (req.url?.includes("/blobs/")) {
      res.writeHead(307, { Location: `http://127.0.0.2:${trapPort}/storage/blob` });
      return res.end();
    }
    res.writeHead(401, { "WWW-Authenticate": `Bearer realm="http://127.0.0.2:${trapPort}/token",service="trap"` });
    res.end();
  });
  const hostilePort = await listen(hostile, "127.0.0.1");
  hostileSkiff = await Skiff.start({ upstream: `http://127.0.0.1:${hostilePort}` });
});

afterAll(async () => {
  await hostileSkiff?.stop();
  await skiff?.stop();
  await registry?.stop();
  await new Promise((r) => hostile?.close(r));
  await new Promise((r) => trap?.close(r));
  await teardown();
});

describe("only the configured upstream is contacted", () => {
  test("a name that spells the trap's address goes to the upstream as a plain repository name", async () => {
    const withPort = await transfer(`${skiff.url}/v2/127.0.0.2:${trapPort}/app/manifests/v1`);
    expect(withPort.status).toBe(400);
    expect(JSON.parse(withPort.body.toString()).errors[0].code).toBe("NAME_INVALID");

    const before = await registry.settledRequestCount();
    const hostLike = await transfer(`${skiff.url}/v2/127.0.0.2/app/manifests/v1`);
    expect(hostLike.status).toBe(404);
    expect(JSON.parse(hostLike.body.toString()).errors[0].code).toBe("MANIFEST_UNKNOWN");
    expect(await registry.settledRequestCount()).toBeGreaterThan(before); // asked the real upstream, under that name
  });

  test("?ns= naming the trap is refused without any upstream request", async () => {
    const before = await registry.settledRequestCount();
    const res = await transfer(`${skiff.url}/v2/e2e/app/manifests/v1?ns=127.0.0.2:${trapPort}`);
    expect(res.status).toBe(404);
    expect(JSON.parse(res.body.toString()).errors[0].code).toBe("NAME_UNKNOWN");
    const blob = await transfer(`${skiff.url}/v2/e2e/app/blobs/${image.layers[0]!.digest}?ns=127.0.0.2`);
    expect(blob.status).toBe(404);
    expect(await registry.settledRequestCount()).toBe(before);
    // The same request with the upstream's own name works, so the refusal is about the name alone.
    const accept = { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } };
    expect((await transfer(`${skiff.url}/v2/e2e/app/manifests/v1?ns=${registry.hostPort}`, accept)).status).toBe(200);
  });

  test("a redirect to the trap is refused with an OCI error", async () => {
    const digest = `sha256:${"ab".repeat(32)}`;
    const res = await transfer(`${hostileSkiff.url}/v2/e2e/app/blobs/${digest}`);
    expect(res.status).toBe(502);
    const err = JSON.parse(res.body.toString()).errors[0];
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toContain("not allowed");
  });

  test("a token realm on the trap is refused with an OCI error", async () => {
    const res = await transfer(`${hostileSkiff.url}/v2/e2e/app/manifests/v1`);
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body.toString()).errors[0].message).toContain("token realm");
  });

  test("the trap saw no connection, and it does count connections", async () => {
    expect(trapConnections).toBe(0);
    await new Promise<void>((resolve, reject) => {
      const s = connect(trapPort, "127.0.0.2", () => resolve());
      s.on("error", reject);
    });
    for (let i = 0; i < 50 && trapConnections === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(trapConnections).toBe(1);
  });
});
