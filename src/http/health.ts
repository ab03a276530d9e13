// Liveness and readiness, for orchestrators' probes: /healthz says the process serves, /readyz that
// it can do its job (the store takes writes, an upstream is configured) and is not shutting down.
// In the core, so every runtime answers them on its public port, where kubelet's probes arrive.
import { putBytes, type ContentStore } from "../store/store.ts";
import { within } from "../util/sleep.ts";

export interface HealthOptions {
  store: ContentStore;
  /** How many upstreams the config names. */
  upstreams: number;
  log?: (message: string) => void;
  now?: () => number;
}

/** Probes come every few seconds from every prober: one store write answers them all for this long. */
const PROBE_TTL_MS = 5_000;
/** A store that takes longer than this to write a few bytes is as good as stuck. */
const PROBE_TIMEOUT_MS = 5_000;
const PROBE_KEY = "_health/readyz-probe";

export class Health {
  readonly #opts: HealthOptions;
  readonly #now: () => number;
  #stopping = false;
  /** The last store probe: when it started and what it found (null: writable; else why not). */
  #probe: { at: number; problem: Promise<string | null> } | null = null;

  constructor(opts: HealthOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** Shutdown has begun: not ready from now on, so load balancers stop sending new work. */
  stopping(): void {
    this.#stopping = true;
  }

  live(): Response {
    return answer(200, "ok");
  }

  async ready(): Promise<Response> {
    const problem = this.#stopping ? "shutting down" : this.#opts.upstreams === 0 ? "no upstream configured" : await this.#storeProblem();
    return problem === null ? answer(200, "ready") : answer(503, `not ready: ${problem}`);
  }

  #storeProblem(): Promise<string | null> {
    const now = this.#now();
    if (this.#probe === null || now - this.#probe.at >= PROBE_TTL_MS) this.#probe = { at: now, problem: this.#probeStore() };
    return this.#probe.problem;
  }

  /** Writes and deletes a few bytes. The reason is short (an errno code): the route is public, paths are not. */
  async #probeStore(): Promise<string | null> {
    const { store, log } = this.#opts;
    const probe = (async () => {
      await putBytes(store, PROBE_KEY, new TextEncoder().encode(String(this.#now())));
      await store.delete(PROBE_KEY);
    })();
    try {
      if ((await within(PROBE_TIMEOUT_MS, probe)) === "timeout") {
        probe.catch(() => {});
        log?.(`readiness: the store took over ${PROBE_TIMEOUT_MS} ms to write a probe`);
        return "store write timed out";
      }
      return null;
    } catch (err) {
      log?.(`readiness: the store refused a probe write: ${(err as Error).message}`);
      return `store not writable (${(err as { code?: string }).code ?? (err as Error).name})`;
    }
  }
}

function answer(status: number, text: string): Response {
  return new Response(`${text}\n`, { status, headers: { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store" } });
}
