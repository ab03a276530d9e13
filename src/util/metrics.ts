// Prometheus text exposition of a handful of counters. Kept in-process and dependency-free so it
// works the same on every runtime.

type Labels = Record<string, string>;

interface Counter {
  help: string;
  values: Map<string, { labels: Labels; value: number }>;
}

interface Reading {
  help: string;
  type: "counter" | "gauge";
  read: () => number;
}

export class Metrics {
  readonly #counters = new Map<string, Counter>();
  /** Metrics whose value is read from their owner when rendered. */
  readonly #readings = new Map<string, Reading>();

  constructor(definitions: Record<string, string>) {
    for (const [name, help] of Object.entries(definitions)) this.#counters.set(name, { help, values: new Map() });
  }

  inc(name: string, labels: Labels = {}, by = 1): void {
    this.#entry(name, labels).value += by;
  }

  /** `inc` of one series, resolved once: for hot paths that count the same series on every request. */
  counter(name: string, labels: Labels = {}): (by?: number) => void {
    let entry: { value: number } | undefined;
    return (by = 1) => {
      entry ??= this.#entry(name, labels);
      entry.value += by;
    };
  }

  #entry(name: string, labels: Labels): { labels: Labels; value: number } {
    const counter = this.#counters.get(name);
    if (!counter) throw new Error(`unknown metric ${name}`);
    const key = JSON.stringify(labels);
    let entry = counter.values.get(key);
    if (!entry) counter.values.set(key, (entry = { labels, value: 0 }));
    return entry;
  }

  get(name: string, labels: Labels = {}): number {
    return this.#counters.get(name)?.values.get(JSON.stringify(labels))?.value ?? 0;
  }

  /** A metric kept by another part (the store's usage), read at each render. */
  observe(name: string, type: Reading["type"], help: string, read: () => number): void {
    this.#readings.set(name, { help, type, read });
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, { help, type, read }] of this.#readings) lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${read()}`);
    for (const [name, counter] of this.#counters) {
      lines.push(`# HELP ${name} ${counter.help}`, `# TYPE ${name} counter`);
      if (counter.values.size === 0) lines.push(`${name} 0`);
      for (const { labels, value } of counter.values.values()) lines.push(`${name}${formatLabels(labels)} ${value}`);
    }
    return lines.join("\n") + "\n";
  }
}

function formatLabels(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, (c) => (c === "\n" ? "\\n" : `\\${c}`))}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

export function createMetrics(): Metrics {
  return new Metrics({
    skiff_http_requests_total: "HTTP requests answered, by route kind, method and status.",
    skiff_served_bytes_total: "Body bytes sent to clients, by route kind.",
    skiff_cache_hits_total: "Requests answered from the verified cache, by kind.",
    skiff_cache_misses_total: "Requests that needed the upstream, by kind.",
    skiff_upstream_requests_total: "Requests sent to upstream registries (tokens and redirects included), by upstream prefix and status.",
    skiff_upstream_rate_limited_total: "Upstream answers 429 Too Many Requests, by upstream prefix.",
    skiff_access_total: "Access decisions on registry and lazy routes, by access mode and result (allowed, unauthorized, denied, unavailable).",
    skiff_upstream_bytes_total: "Body bytes received from the upstream registry.",
    skiff_verification_failures_total: "Upstream objects whose bytes did not match their digest.",
    skiff_stale_served_total: "Tag answers served stale because the upstream was unreachable, failing or rate limited.",
    skiff_conversions_started_total: "Layer conversions started or resumed.",
    skiff_conversion_steps_total: "Layer conversions that paused after a step, to go on at a later request.",
    skiff_blob_fetch_steps_total: "Steps of cold blob fetches made across requests (Workers: BLOB_STEP) that left the blob to a later request.",
    skiff_conversions_finished_total: "Layer conversions published.",
    skiff_conversions_failed_total: "Layer conversions that failed and published nothing.",
    skiff_conversion_seconds_total: "Seconds spent in layer conversions that finished.",
    skiff_chunk_bytes_served_total: "Converted bytes served, by route (data, chunks).",
    skiff_none_first_answers_total: "Bootstrap requests answered with the none conversion while the codec asked for was converted.",
    skiff_learned_reads_reports_total: "Learned-prefetch reports from nodes, by result (stored, refused: none of its digests was a chunk of the image).",
    skiff_learned_reads_dropped_total: "Digests in learned-prefetch reports that were not chunks of the image, dropped.",
  });
}
