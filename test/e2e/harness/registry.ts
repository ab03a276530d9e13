// A real CNCF Distribution registry (Debian's `docker-registry`, 2.8.x) on 127.0.0.1, with filesystem
// storage in a temp dir and its access log (one line per request, on stdout) captured to a file.
// stop() and start() keep the port and the storage, so a test can take the upstream away.
import { closeSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import { Agent, fetch as undiciFetch } from "undici";
import type { LinkRelay } from "../../../bench/link-relay.mjs";
import { tempDir } from "./workdir.ts";
import { freePort, hasExited, spawnService, stopChild, waitFor } from "./processes.ts";

export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  /** PEM file with the certificate(s) whose keys sign the tokens. */
  rootCertBundle: string;
}

export interface HtpasswdAuthConfig {
  realm: string;
  /** An htpasswd file with bcrypt entries (the only kind Distribution accepts). */
  path: string;
}

/** PEM files for serving https; `ca` is what a client must trust. */
export interface TlsFiles {
  certificate: string;
  key: string;
  ca: string;
}

export interface RegistryOptions {
  /** Recognisable name for the temp dir. */
  name?: string;
  auth?: { token: TokenAuthConfig } | { htpasswd: HtpasswdAuthConfig };
  /** Serve https with these files instead of plain http. */
  tls?: TlsFiles;
}

export interface AccessLogLine {
  remote: string;
  time: string;
  method: string;
  path: string;
  status: number;
  bytes: number;
  referer: string;
  userAgent: string;
  raw: string;
}

const ACCESS_LINE = /^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+)[^"]*" (\d{3}) (\S+) "([^"]*)" "([^"]*)"/;

export function parseAccessLine(raw: string): AccessLogLine | undefined {
  const m = ACCESS_LINE.exec(raw);
  if (m === null) return undefined;
  return {
    remote: m[1]!,
    time: m[2]!,
    method: m[3]!,
    path: m[4]!,
    status: Number(m[5]),
    bytes: m[6] === "-" ? 0 : Number(m[6]),
    referer: m[7]!,
    userAgent: m[8]!,
    raw,
  };
}

function yamlString(s: string): string {
  return JSON.stringify(s); // a JSON string is a valid YAML double-quoted scalar
}

export class Registry {
  readonly dir: string;
  readonly storageDir: string;
  readonly configPath: string;
  readonly accessLogPath: string;
  readonly errorLogPath: string;
  readonly port: number;
  readonly tls: TlsFiles | undefined;
  private child: ChildProcess | undefined;

  private constructor(dir: string, port: number, tls: TlsFiles | undefined) {
    this.dir = dir;
    this.port = port;
    this.tls = tls;
    this.storageDir = join(dir, "storage");
    this.configPath = join(dir, "config.yml");
    this.accessLogPath = join(dir, "access.log");
    this.errorLogPath = join(dir, "registry.log");
  }

  /** Create the config and storage, and start the registry on a free loopback port. */
  static async start(options: RegistryOptions = {}): Promise<Registry> {
    const dir = tempDir(options.name ?? "registry");
    const port = await freePort();
    const reg = new Registry(dir, port, options.tls);
    writeFileSync(reg.configPath, reg.config(options));
    writeFileSync(reg.accessLogPath, "");
    await reg.start();
    return reg;
  }

  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `${this.tls ? "https" : "http"}://${this.hostPort}`;
  }

  get running(): boolean {
    return this.child !== undefined && !hasExited(this.child);
  }

  private config(options: RegistryOptions): string {
    const lines = [
      "version: 0.1",
      "log:",
      "  level: info",
      "  formatter: text",
      "  accesslog:",
      "    disabled: false",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${yamlString(this.storageDir)}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: ${yamlString(this.hostPort)}`,
      `  secret: ${yamlString(`skiff-e2e-${this.port}`)}`,
    ];
    if (this.tls) lines.push("  tls:", `    certificate: ${yamlString(this.tls.certificate)}`, `    key: ${yamlString(this.tls.key)}`);
    const auth = options.auth;
    if (auth !== undefined && "token" in auth) {
      lines.push(
        "auth:",
        "  token:",
        `    realm: ${yamlString(auth.token.realm)}`,
        `    service: ${yamlString(auth.token.service)}`,
        `    issuer: ${yamlString(auth.token.issuer)}`,
        `    rootcertbundle: ${yamlString(auth.token.rootCertBundle)}`,
      );
    } else if (auth !== undefined && "htpasswd" in auth) {
      lines.push(
        "auth:",
        "  htpasswd:",
        `    realm: ${yamlString(auth.htpasswd.realm)}`,
        `    path: ${yamlString(auth.htpasswd.path)}`,
      );
    }
    return `${lines.join("\n")}\n`;
  }

  /** (Re)start on the same port and storage; resolves when GET /v2/ answers (200 or 401). */
  async start(): Promise<void> {
    if (this.running) return;
    const out = openSync(this.accessLogPath, "a");
    const err = openSync(this.errorLogPath, "a");
    try {
      this.child = spawnService("docker-registry", ["serve", this.configPath], {
        stdio: ["ignore", out, err],
      });
    } finally {
      closeSync(out);
      closeSync(err);
    }
    const child = this.child;
    const spawnError = new Promise<never>((_, reject) =>
      child.once("error", (e) => reject(new Error(`cannot start docker-registry: ${e.message}`))),
    );
    spawnError.catch(() => undefined);
    await Promise.race([
      spawnError,
      waitFor(
        `registry on ${this.url}`,
        async () => {
          if (hasExited(child)) {
            throw new Error(`docker-registry exited (${child.exitCode}): ${this.errorLog().slice(-2000)}`);
          }
          const dispatcher = this.tls ? new Agent({ connect: { ca: readFileSync(this.tls.ca, "utf8") } }) : undefined;
          const res = await undiciFetch(`${this.url}/v2/`, { signal: AbortSignal.timeout(2_000), dispatcher }).finally(() => dispatcher?.close());
          await res.arrayBuffer();
          return res.status === 200 || res.status === 401 ? true : undefined;
        },
        { timeoutMs: 20_000, intervalMs: 100 },
      ),
    ]);
  }

  /** Stop the registry process (the port and storage stay reserved for start()). */
  async stop(): Promise<void> {
    if (this.child === undefined) return;
    await stopChild(this.child);
    this.child = undefined;
  }

  /**
   * `kill -9` the registry, as a crash would. The kernel still delivers what the dead process had
   * written to its sockets (megabytes on loopback), which a crashed host would lose: with the link
   * relay the registry is reached through, those bytes are dropped at the same instant.
   */
  async kill(link?: LinkRelay): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child !== undefined && !hasExited(child)) {
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGKILL");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
    }
    link?.cut();
  }

  /** Access-log lines so far (parsed; unparsable lines are dropped). */
  accessLog(): AccessLogLine[] {
    return readFileSync(this.accessLogPath, "utf8")
      .split("\n")
      .map(parseAccessLine)
      .filter((l): l is AccessLogLine => l !== undefined);
  }

  /** Number of requests the registry has logged so far. */
  requestCount(): number {
    return this.accessLog().length;
  }

  /**
   * The request count once the log has stayed unchanged for `quietMs`: the registry writes a line
   * after it has answered, so a count read right after a response can still miss it.
   */
  async settledRequestCount(quietMs = 300, maxMs = 10_000): Promise<number> {
    let count = this.requestCount();
    for (const started = Date.now(); Date.now() - started < maxMs; ) {
      await new Promise((r) => setTimeout(r, quietMs));
      const now = this.requestCount();
      if (now === count) return now;
      count = now;
    }
    return count;
  }

  /** The registry's own log (stderr). */
  errorLog(): string {
    try {
      return readFileSync(this.errorLogPath, "utf8");
    } catch {
      return "";
    }
  }

  /** On-disk path of a blob's data file in the registry's storage. */
  blobDataPath(digest: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (m === null) throw new Error(`not a sha256 digest: ${digest}`);
    const hex = m[1]!;
    return join(this.storageDir, "docker", "registry", "v2", "blobs", "sha256", hex.slice(0, 2), hex, "data");
  }
}
