// skiff serving https itself (`--tls-cert --tls-key`), on Node and on Deno, with a certificate from
// a private CA: skopeo and containerd pull through it, and `skiff mount` mounts from it, trusting
// only that CA; HTTP/2 is negotiated when the client offers it and HTTP/1.1 otherwise; a plain-http
// request to the port is refused cleanly; and a new certificate is served after SIGHUP or a rewrite
// of the files, by the same process, while a bad new pair is refused and the old one kept.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { connect as http2Connect, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import { connect as netConnect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Registry, type TlsFiles } from "./harness/registry.ts";
import { Skiff, SKIFF_BIN, type SkiffRuntime } from "./harness/skiff.ts";
import { Containerd, writeMirrorHostsToml } from "./harness/containerd.ts";
import { OciLayout, buildImage, pushImage, type ImageInfo } from "./harness/images.ts";
import { skopeoCopy } from "./harness/skopeo.ts";
import { compareTrees } from "./harness/files.ts";
import { makeTls } from "./harness/tls.ts";
import { run, waitFor } from "./harness/processes.ts";
import { tempDir } from "./harness/workdir.ts";
import { teardown } from "./harness/teardown.ts";

let registry: Registry;
let image: ImageInfo;
let direct: string;
/** Two certificates for 127.0.0.1, each from its own test CA. */
let first: TlsFiles;
let second: TlsFiles;
const skiffs: Skiff[] = [];

beforeAll(async () => {
  registry = await Registry.start({ name: "tls-mirror-registry" });
  const layout = new OciLayout(tempDir("tls-mirror-layout"));
  // Layers of a few MB of random bytes: more than HTTP/2's flow-control windows.
  image = buildImage(layout, { tag: "v1", seed: "skiff-tls", layers: 2, filesPerLayer: 3, fileSize: 1024 * 1024 });
  await pushImage(layout, "v1", `${registry.hostPort}/e2e/tls:v1`);
  [first, second] = await Promise.all([makeTls("skiff-tls-1"), makeTls("skiff-tls-2")]);
  direct = tempDir("tls-mirror-direct");
  await skopeoCopy(`docker://${registry.hostPort}/e2e/tls:v1`, `dir:${direct}`);
}, 120_000);

afterAll(async () => {
  for (const s of skiffs) await s.stop();
  await registry?.stop();
  await teardown();
}, 60_000);

/** skiff on `runtime` serving `first`, from copies of its files that a test may overwrite. */
async function startTls(runtime: SkiffRuntime): Promise<{ skiff: Skiff; live: TlsFiles }> {
  const dir = tempDir(`tls-live-${runtime}`);
  const live = { certificate: join(dir, "server.pem"), key: join(dir, "server.key"), ca: first.ca };
  install(first, live);
  const skiff = await Skiff.start({ upstream: registry.url, runtime, tls: live });
  skiffs.push(skiff);
  return { skiff, live };
}

function install(from: TlsFiles, to: TlsFiles, parts: ("certificate" | "key")[] = ["certificate", "key"]): void {
  for (const p of parts) copyFileSync(from[p], to[p]);
}

/** A CA directory as skopeo (containers/image) reads it: `*.crt` files. */
function certDir(ca: string): string {
  const dir = tempDir("tls-cert-dir");
  mkdirSync(dir, { recursive: true });
  copyFileSync(ca, join(dir, "ca.crt"));
  return dir;
}

/** A TLS handshake with skiff: the certificate's SHA-256 fingerprint and the protocol ALPN settled on. */
function handshake(skiff: Skiff, alpn?: string[]): Promise<{ fingerprint: string; alpn: string | false }> {
  const { hostname, port } = new URL(skiff.url);
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: hostname, port: Number(port), rejectUnauthorized: false, ALPNProtocols: alpn, timeout: 5_000 }, () => {
      resolve({ fingerprint: socket.getPeerCertificate().fingerprint256, alpn: socket.alpnProtocol ?? false });
      socket.end();
    });
    socket.once("timeout", () => socket.destroy(new Error("TLS handshake timed out")));
    socket.once("error", reject);
  });
}

function fingerprintOf(files: TlsFiles): string {
  return new X509Certificate(readFileSync(files.certificate)).fingerprint256;
}

/** One request on an HTTP/2 session: status, headers and the whole body. */
function h2Get(session: ClientHttp2Session, path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ":path": path, ...headers });
    const chunks: Buffer[] = [];
    let head: IncomingHttpHeaders = {};
    stream.setTimeout(60_000, () => stream.close());
    stream.on("response", (h) => (head = h));
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("end", () => resolve({ status: Number(head[":status"]), headers: head, body: Buffer.concat(chunks) }));
    stream.on("error", reject);
  });
}

/** What a plain-http request to the TLS port gets back before the connection closes, and how long that took. */
function plainHttp(skiff: Skiff): Promise<{ answer: string; ms: number }> {
  const { hostname, port } = new URL(skiff.url);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: hostname, port: Number(port) }, () => socket.write(`GET /v2/ HTTP/1.1\r\nHost: ${skiff.hostPort}\r\n\r\n`));
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error("no close within 10 s")));
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.once("close", () => resolve({ answer: Buffer.concat(chunks).toString("latin1"), ms: Date.now() - started }));
    socket.once("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNRESET" ? undefined : reject(err)));
  });
}

describe.each(["node", "deno"] as const)("skiff serving https on %s", (runtime) => {
  let skiff: Skiff;
  let live: TlsFiles;

  beforeAll(async () => {
    ({ skiff, live } = await startTls(runtime));
  }, 60_000);

  test("it says https in its ready line, and logs the certificate it serves", () => {
    expect(skiff.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    expect(skiff.log()).toContain(`TLS certificate CN=127.0.0.1, valid until`);
    expect(skiff.log()).toContain(fingerprintOf(first));
  });

  test("skopeo copies through it over https, trusting only the test CA, byte-identical to a direct copy", async () => {
    const via = tempDir(`tls-via-${runtime}`);
    await skopeoCopy(`docker://${skiff.hostPort}/e2e/tls:v1`, `dir:${via}`, { srcCertDir: certDir(first.ca) });
    const diff = compareTrees(direct, via);
    expect(diff).toMatchObject({ onlyInA: [], onlyInB: [], different: [] });
    expect(diff.same.length).toBe(image.layers.length + 3);
  }, 120_000);

  test("ctr pulls through it over https (hosts.toml mirror with the test CA)", async () => {
    const containerd = await Containerd.start();
    try {
      const hostsDir = tempDir(`tls-hosts-${runtime}`);
      writeMirrorHostsToml(hostsDir, registry.hostPort, skiff.url, first.ca);
      const ref = `${registry.hostPort}/e2e/tls:v1`;
      const servedBefore = await skiff.metric("skiff_served_bytes_total");
      const r = await containerd.pull(ref, { hostsDir, plainHttp: false });
      expect(r.code, `ctr pull failed:\n${r.stdout}\n${r.stderr}\nskiff log:\n${skiff.log().slice(-3000)}`).toBe(0);
      expect((await containerd.images()).find((i) => i.ref === ref)?.digest).toBe(image.manifest.digest);
      const layerBytes = image.layers.reduce((n, l) => n + l.size, 0);
      expect((await skiff.metric("skiff_served_bytes_total")) - servedBefore).toBeGreaterThanOrEqual(layerBytes);
    } finally {
      await containerd.stop();
    }
  }, 180_000);

  test("HTTP/2 is negotiated when the client offers it, HTTP/1.1 otherwise", async () => {
    expect((await handshake(skiff, ["h2", "http/1.1"])).alpn).toBe("h2");
    expect((await handshake(skiff, ["http/1.1"])).alpn).toBe("http/1.1");
    const curl1 = await run("curl", ["-sS", "--cacert", first.ca, "--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", `${skiff.url}/v2/`], { timeoutMs: 30_000 });
    expect(curl1.stdout).toBe("1.1 200");
    const curl2 = await run("curl", ["-sS", "--cacert", first.ca, "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", `${skiff.url}/v2/`], { timeoutMs: 30_000 });
    expect(curl2.stdout).toBe("2 200");
  }, 60_000);

  test("over HTTP/2, whole layers and byte ranges of them (cold and cached) are the registry's bytes", async () => {
    const session = http2Connect(skiff.url, { ca: readFileSync(first.ca) });
    try {
      // HEAD, as clients resolve a tag: the manifest's length and digest, no body.
      const head = await h2Get(session, "/v2/e2e/tls/manifests/v1", { ":method": "HEAD", accept: image.manifest.mediaType });
      expect(head.status).toBe(200);
      expect(head.headers["docker-content-digest"]).toBe(image.manifest.digest);
      expect(head.headers["content-length"]).toBe(String(image.manifestBytes.length));
      expect(head.body.length).toBe(0);
      for (const layer of image.layers) {
        const bytes = image.layout.readBlob(layer.digest);
        const path = `/v2/e2e/tls/blobs/${layer.digest}`;
        const whole = await h2Get(session, path);
        expect(whole.status).toBe(200);
        expect(whole.body.equals(bytes)).toBe(true);
        for (const [start, end] of [
          [0, 99],
          [70_000, 70_000 + 512 * 1024 - 1],
          [bytes.length - 1000, bytes.length - 1],
        ] as const) {
          // Twice: the second is a warm range of a remembered blob, which Node answers by its shortcut.
          for (let i = 0; i < 2; i++) {
            const part = await h2Get(session, path, { range: `bytes=${start}-${end}` });
            expect(part.status).toBe(206);
            expect(part.headers["content-range"]).toBe(`bytes ${start}-${end}/${bytes.length}`);
            expect(part.body.equals(bytes.subarray(start, end + 1))).toBe(true);
          }
        }
      }
    } finally {
      session.close();
    }
  }, 60_000);

  if (runtime === "node") {
    test("a plain-http request to the TLS port gets a 400 saying to use https, and the connection closes", async () => {
      const { answer, ms } = await plainHttp(skiff);
      expect(answer).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
      expect(answer).toContain("Connection: close\r\n");
      expect(answer.split("\r\n\r\n")[1]).toBe("This port speaks https: use https:// to reach it.\n");
      expect(ms).toBeLessThan(3_000);
      const curl = await run("curl", ["-sS", "-i", `http://${skiff.hostPort}/v2/`], { timeoutMs: 30_000 });
      expect(curl.code).toBe(0);
      expect(curl.stdout).toMatch(/^HTTP\/1\.1 400 Bad Request/);
      expect(await handshake(skiff)).toMatchObject({ fingerprint: fingerprintOf(first) });
    }, 30_000);
  } else {
    test("a plain-http request to the TLS port is closed at once (Deno answers a TLS alert, no 400)", async () => {
      const { ms } = await plainHttp(skiff);
      expect(ms).toBeLessThan(3_000);
      expect(await handshake(skiff)).toMatchObject({ fingerprint: fingerprintOf(first) });
    }, 30_000);
  }

  test("SIGHUP after the files are replaced: new handshakes get the new certificate, same process", async () => {
    const pid = skiff.pid;
    const session = http2Connect(skiff.url, { ca: readFileSync(first.ca) });
    try {
      expect((await h2Get(session, "/v2/")).status).toBe(200);
      install(second, live);
      process.kill(pid, "SIGHUP");
      const seen = await waitFor("the new certificate", async () => ((await handshake(skiff)).fingerprint === fingerprintOf(second) ? true : undefined), { timeoutMs: 10_000, intervalMs: 100 });
      expect(seen).toBe(true);
      expect(skiff.log()).toMatch(/TLS certificate reloaded \(SIGHUP\): .*CN=127\.0\.0\.1/);
      expect(await handshake(skiff, ["h2", "http/1.1"])).toEqual({ fingerprint: fingerprintOf(second), alpn: "h2" });
      expect(skiff.pid).toBe(pid);
      expect(skiff.running).toBe(true);
      // A client that trusts only the new CA pulls; on Node the connection opened before the reload
      // still works (Deno closes the old server's connections once idle: see docs/deploy.md).
      const via = tempDir(`tls-after-hup-${runtime}`);
      await skopeoCopy(`docker://${skiff.hostPort}/e2e/tls:v1`, `dir:${via}`, { srcCertDir: certDir(second.ca) });
      expect(compareTrees(direct, via).different).toEqual([]);
      if (runtime === "node") expect((await h2Get(session, "/v2/")).status).toBe(200);
    } finally {
      session.close();
    }
  }, 60_000);

  test("rewriting the files is enough; a key that doesn't match is logged and the served pair kept", async () => {
    const pid = skiff.pid;
    install(first, live);
    await waitFor("the rewritten certificate", async () => ((await handshake(skiff)).fingerprint === fingerprintOf(first) ? true : undefined), { timeoutMs: 15_000, intervalMs: 200 });
    expect(skiff.log()).toMatch(/TLS certificate reloaded \(files changed\)/);

    install(second, live, ["certificate"]); // the first pair's key stays: no match
    await waitFor("the refusal in the log", async () => (/TLS reload \(files changed\) failed, still serving sha256 \S+: TLS key .* does not match/.test(skiff.log()) ? true : undefined), {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
    expect((await handshake(skiff)).fingerprint).toBe(fingerprintOf(first));
    // SIGHUP on a bad pair: the same, and the process lives on.
    process.kill(pid, "SIGHUP");
    await waitFor("the SIGHUP refusal", async () => (/TLS reload \(SIGHUP\) failed/.test(skiff.log()) ? true : undefined), { timeoutMs: 10_000, intervalMs: 100 });
    expect((await handshake(skiff)).fingerprint).toBe(fingerprintOf(first));
    expect(skiff.pid).toBe(pid);
    expect(skiff.running).toBe(true);
  }, 60_000);
});

describe("the node side over https", () => {
  test("skiff mount --ca mounts an image from an https skiff and reads its files", async () => {
    const { skiff } = await startTls("node");
    const mountpoint = tempDir("tls-mnt");
    const agent = spawn(process.execPath, [SKIFF_BIN, "mount", `${skiff.url}/e2e/tls:v1`, mountpoint, "--ca", first.ca, "--cache", tempDir("tls-chunks")], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    agent.stdout.on("data", (d) => (output += d));
    agent.stderr.on("data", (d) => (output += d));
    try {
      await waitFor("the mount", async () => {
        if (agent.exitCode !== null) throw new Error(`skiff mount exited ${agent.exitCode}: ${output}`);
        return output.includes("mounted ") ? true : undefined;
      }, { timeoutMs: 60_000, intervalMs: 100 });
      // The agent is another process: reading its mount from here can't deadlock it.
      for (let i = 0; i < image.layers.length; i++) expect(await readFile(join(mountpoint, `data/l${i}/seed.txt`), "utf8")).toBe(`skiff-tls layer ${i}\n`);
    } finally {
      if (agent.exitCode === null) {
        agent.kill("SIGTERM");
        await new Promise((r) => agent.once("exit", r));
      }
      spawnSync("fusermount", ["-uz", mountpoint]);
    }
  }, 120_000);
});

describe("serve's TLS flags", () => {
  const serve = (args: string[]) => run(process.execPath, [SKIFF_BIN, "serve", "--upstream", registry.url, "--host", "127.0.0.1", "--port", "0", "--data", tempDir("tls-flags"), ...args], { timeoutMs: 30_000 });

  test("one flag without the other is a usage error", async () => {
    for (const args of [["--tls-cert", first.certificate], ["--tls-key", first.key]]) {
      const r = await serve(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toBe("skiff serve: give both --tls-cert and --tls-key, or neither\n");
      expect(r.stdout).toBe("");
    }
  }, 30_000);

  test("an unreadable file or a key that doesn't match the certificate stops the start with one line", async () => {
    const missing = join(tempDir("tls-missing"), "nothing.pem");
    const cases: [string[], string][] = [
      [["--tls-cert", missing, "--tls-key", first.key], `skiff serve: can't read the TLS certificate ${missing}: ENOENT\n`],
      [["--tls-cert", first.certificate, "--tls-key", second.key], `skiff serve: TLS key ${second.key} does not match the certificate in ${first.certificate}\n`],
      [["--tls-cert", first.key, "--tls-key", first.key], `skiff serve: TLS certificate ${first.key} holds no PEM certificate\n`],
    ];
    for (const [args, line] of cases) {
      const r = await serve(args);
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(line);
      expect(r.stdout).toBe("");
    }
  }, 30_000);

  test("--check checks the pair too", async () => {
    const good = await serve(["--check", "--tls-cert", first.certificate, "--tls-key", first.key]);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain(`TLS certificate CN=127.0.0.1, valid until `);
    expect(good.stdout).toContain(`sha256 ${fingerprintOf(first)}\n`);
    const bad = await serve(["--check", "--tls-cert", first.certificate, "--tls-key", second.key]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe(`skiff serve: TLS key ${second.key} does not match the certificate in ${first.certificate}\n`);
  }, 30_000);
});
