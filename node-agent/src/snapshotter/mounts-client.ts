// The snapshotter's side of the mounts daemon (mounts-daemon.ts): finds the daemon on its socket,
// or starts one in its own session so that it outlives this process, and asks it to mount and
// unmount. A daemon that died is started again on the next request, and mounts its table again.
import { request } from "node:http";
import type { LayerMountSpec } from "./mounts-daemon.ts";
import { isAbsent } from "../fuse/keeper-link.ts";
import { spawnDetached } from "./spawn-detached.ts";

export interface MountsClientOptions {
  socket: string;
  /** argv (after node) that starts the daemon, e.g. [skiff.js, "snapshotter", "--mounts-daemon", …]. */
  daemonArgs: string[];
  /** The daemon's stdout and stderr go here. */
  logFile: string;
  log: (message: string) => void;
}

export interface DaemonStatus {
  pid: number;
  cache: { bytes: number; maxBytes: number; entries: number; hits: number; misses: number; evictions: number };
  images: { served: number; learning: number };
  mounts: { image: string; layer: string; bytesFetched: number; fetches: number; fetchMs: number; errors: number; cacheHits: number; prefetchedChunks: number; prefetchDone: boolean }[];
}

const START_TIMEOUT_MS = 15_000;


export class MountsClient {
  readonly #o: MountsClientOptions;
  #starting: Promise<void> | undefined;

  constructor(o: MountsClientOptions) {
    this.#o = o;
  }

  /** Adopts the running daemon or starts one; returns its status. */
  async ensure(): Promise<DaemonStatus> {
    try {
      return (await this.#call("GET", "/status")) as DaemonStatus;
    } catch (err) {
      // Only a daemon that is not there is started: a second one would mount over the first's layers.
      if (!isAbsent(err)) throw err;
      await (this.#starting ??= this.#start().finally(() => (this.#starting = undefined)));
      return (await this.#call("GET", "/status")) as DaemonStatus;
    }
  }

  async mount(spec: LayerMountSpec): Promise<void> {
    await this.ensure();
    await this.#call("POST", "/mount", spec);
  }

  async unmount(mountpoint: string): Promise<void> {
    await this.ensure();
    await this.#call("POST", "/unmount", { mountpoint });
  }

  async #start(): Promise<void> {
    // One malloc arena (glibc; others ignore it) unless the environment chooses: each FUSE thread
    // that allocates would otherwise keep an arena of its own, about 20 MiB more for the daemon
    // with 60 mounts, for no gain in time (docs/benchmarks.md, "Node memory").
    const env: Record<string, string> = process.env.MALLOC_ARENA_MAX === undefined ? { MALLOC_ARENA_MAX: "1" } : {};
    const pid = spawnDetached(this.#o.daemonArgs, this.#o.logFile, env);
    this.#o.log(`started the mounts daemon (pid ${pid})`);
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      try {
        await this.#call("GET", "/status");
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw new Error(`the mounts daemon did not answer on ${this.#o.socket} within ${START_TIMEOUT_MS / 1000} s (see ${this.#o.logFile})`);
  }

  #call(method: string, path: string, body?: unknown): Promise<unknown> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      // No keep-alive (agent: false): a connection the daemon closed while idle would fail the next call.
      const req = request({ socketPath: this.#o.socket, agent: false, method, path, headers: text ? { "content-type": "application/json", "content-length": Buffer.byteLength(text) } : {}, timeout: 120_000 }, (res) => {
        const parts: Buffer[] = [];
        res.on("data", (p: Buffer) => parts.push(p));
        res.on("end", () => {
          let parsed: { error?: string } = {};
          try {
            parsed = JSON.parse(Buffer.concat(parts).toString("utf8")) as { error?: string };
          } catch {
            // an empty or broken answer is judged by its status
          }
          if (res.statusCode === 200) resolve(parsed);
          else reject(new Error(parsed.error ?? `mounts daemon: HTTP ${res.statusCode}`));
        });
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error(`mounts daemon: no answer to ${method} ${path}`)));
      req.on("error", reject);
      req.end(text);
    });
  }
}
