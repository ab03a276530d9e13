// `skiff bench`: load generators for a running registry. `skiff bench ranges` hammers one blob with
// Range requests and checks every answer (engine in src/bench/ranges.ts).
import { readFile } from "node:fs/promises";
import { ERROR_KINDS, loadReference, parsePatternFile, probeSize, runRangeBench, type Pattern, type RangeBenchResult, type SizeSpec } from "../bench/ranges.ts";
import { headerFlag, integerFlag, parseFlags, UsageError } from "./args.ts";
import { parseSize } from "../util/size.ts";
import { formatBytes, Progress } from "./progress.ts";

export const benchHelp = `Usage: skiff bench <benchmark> [options]

Benchmarks:
  ranges      Range requests against one blob URL, every answer checked

Run 'skiff bench <benchmark> --help' for its options.`;

export const benchRangesHelp = `Usage: skiff bench ranges URL [options]

Sends single-range GETs for the blob at URL from N concurrent keep-alive connections and checks
every answer: status 206, Content-Range exactly "bytes a-b/SIZE", a body of b-a+1 bytes, and with
--reference the bytes themselves. The blob's size comes from HEAD (Content-Length), else from the
Content-Range of "bytes=0-0". Reports requests/s, MB/s (10^6 bytes), latency (request sent to last
byte) and time to first byte (headers received) percentiles, and errors by kind: status,
content-range, short, long, body-mismatch, network, timeout. Exits 1 if any request failed.

Options:
  --duration TIME        how long to send requests: 10s, 500ms, 2m (default 10s, at most 24h)
  --requests N           stop after N requests, if sooner
  --concurrency N        connections, each with one request in flight (default 16)
  --size SIZE            range length: 4k, 64k, 1m, … or random:MIN-MAX, uniform (default 64k;
                         a FILE pattern gives its own lengths)
  --pattern P            random (default; seeded), sequential (each connection walks its own
                         slice of the blob) or a FILE of "offset length" lines, cycled
  --reference FILE       a local copy of the blob (read into memory); bodies are compared with it
  --header 'Name: value' an extra request header (repeatable), e.g. Authorization
  --seed N               seed of random offsets and lengths (default 1)
  --timeout TIME         limit on waiting for headers and between body chunks (default 10s)
  --json                 print one JSON object (fields in ms, MB/s) instead of the table
  -h, --help             show this help`;

export async function benchCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(benchHelp);
    return 0;
  }
  if (name === "ranges") return rangesCommand(rest);
  throw new UsageError(name === undefined ? "expected a benchmark: ranges (see --help)" : `unknown benchmark ${JSON.stringify(name)} (see --help)`);
}

/** A duration such as 10s, 500ms, 2m, 1h; a bare number is seconds. */
export function parseDuration(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  const ms = m ? Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms"] : NaN;
  if (!(ms >= 1 && ms <= 24 * 3_600_000)) throw new UsageError(`--${flag} must be a duration from 1ms to 24h like 10s or 500ms, got ${JSON.stringify(text)}`);
  return ms;
}

export function parseSizeSpec(text: string): SizeSpec {
  const random = /^random:([^-]+)-(.+)$/.exec(text);
  const [min, max] = random ? [parseSize(random[1]!), parseSize(random[2]!)] : [parseSize(text), parseSize(text)];
  if (min === null || max === null || min < 1 || max < min) {
    throw new UsageError(`--size must be a size like 64k or random:4k-1m (MIN ≤ MAX, ≥ 1 byte), got ${JSON.stringify(text)}`);
  }
  return { min, max };
}

function parseHeader(text: string): [string, string] {
  const header = headerFlag(text);
  if (header[0].toLowerCase() === "range") throw new UsageError("--header cannot set Range: the benchmark chooses it");
  return header;
}

async function rangesCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    {
      duration: { type: "string" },
      requests: { type: "string" },
      concurrency: { type: "string" },
      size: { type: "string" },
      pattern: { type: "string" },
      reference: { type: "string" },
      header: { type: "string", multiple: true },
      seed: { type: "string" },
      timeout: { type: "string" },
      json: { type: "boolean" },
    },
    true,
  );
  if (values.help) {
    console.log(benchRangesHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected one blob URL (see --help)");
  const url = positionals[0]!;
  if (!/^https?:\/\/[^/]+/.test(url) || !URL.canParse(url)) throw new UsageError(`expected an http:// or https:// URL, got ${JSON.stringify(url)}`);
  const durationMs = parseDuration(values.duration ?? "10s", "duration");
  const timeoutMs = parseDuration(values.timeout ?? "10s", "timeout");
  const maxRequests = values.requests === undefined ? undefined : integerFlag(values.requests, "requests", 0, 1);
  const concurrency = integerFlag(values.concurrency, "concurrency", 16, 1, 10_000);
  const seed = integerFlag(values.seed, "seed", 1, 0, 2 ** 32 - 1);
  const sizeText = values.size ?? "64k";
  const size = parseSizeSpec(sizeText);
  const headers = (values.header ?? []).map(parseHeader);
  const patternText = values.pattern ?? "random";

  // Files are read before anything is sent, so a typo fails fast.
  let pattern: Pattern;
  if (patternText === "random" || patternText === "sequential") pattern = patternText;
  else {
    const text = await readFile(patternText, "utf8").catch((e: Error) => {
      throw new UsageError(`--pattern: cannot read ${JSON.stringify(patternText)}: ${e.message}`);
    });
    try {
      pattern = parsePatternFile(text);
    } catch (e) {
      throw new UsageError(`--pattern ${patternText}: ${(e as Error).message}`);
    }
  }
  const reference = values.reference === undefined ? undefined : await loadReference(values.reference).catch((e: Error) => {
    throw new UsageError(`--reference: cannot read ${JSON.stringify(values.reference)}: ${e.message}`);
  });

  const blobSize = await probeSize(url, headers, timeoutMs);
  const progress = new Progress();
  const result = await runRangeBench(
    {
      url,
      durationMs,
      maxRequests,
      concurrency,
      size,
      pattern,
      reference,
      headers,
      seed,
      timeoutMs,
      onProgress: (p) => {
        const s = p.elapsedMs / 1000;
        progress.update(
          `ranges ${s.toFixed(1)}/${(durationMs / 1000).toFixed(0)} s  ${p.requests} requests  ${(p.requests / s).toFixed(0)} req/s  ${(p.bytes / 1e6 / s).toFixed(1)} MB/s  ${p.errors} errors`,
        );
      },
    },
    blobSize,
  );
  progress.done();

  const params = {
    url,
    blobSize,
    durationMs,
    maxRequests: maxRequests ?? null,
    concurrency,
    size: typeof pattern === "object" ? null : sizeText,
    pattern: patternText,
    reference: values.reference ?? null,
    seed,
    timeoutMs,
  };
  if (values.json) console.log(JSON.stringify(jsonReport(result, params), null, 2));
  else printTable(result, params);
  return result.errors > 0 ? 1 : 0;
}

const round = (n: number, digits = 3) => Number(n.toFixed(digits));

function jsonReport(r: RangeBenchResult, params: object) {
  return {
    requests: r.requests,
    errors: r.errors,
    rps: round(r.rps, 1),
    mbps: round(r.mbps, 2),
    p50: r.p50,
    p90: r.p90,
    p99: r.p99,
    p999: r.p999,
    max: r.max,
    ttfbP50: r.ttfbP50,
    ttfbP99: r.ttfbP99,
    bytes: r.bytes,
    elapsedMs: round(r.elapsedMs, 1),
    errorsByKind: r.errorsByKind,
    firstErrors: r.firstErrors,
    params,
  };
}

function printTable(r: RangeBenchResult, p: { url: string; blobSize: number; concurrency: number; size: string | null; pattern: string }): void {
  const ms = (n: number) => n.toFixed(n < 10 ? 3 : 1);
  const lines = [
    `${p.url}: blob of ${formatBytes(p.blobSize)}, ${p.concurrency} connections, ${p.size === null ? `ranges from ${p.pattern}` : `${p.size} ranges, ${p.pattern} pattern`}`,
    "",
    `  requests       ${r.requests} in ${(r.elapsedMs / 1000).toFixed(2)} s`,
    `  throughput     ${r.rps.toFixed(1)} req/s, ${r.mbps.toFixed(2)} MB/s`,
    `  latency (ms)   p50 ${ms(r.p50)}  p90 ${ms(r.p90)}  p99 ${ms(r.p99)}  p99.9 ${ms(r.p999)}  max ${ms(r.max)}`,
    `  ttfb (ms)      p50 ${ms(r.ttfbP50)}  p99 ${ms(r.ttfbP99)}`,
    `  errors         ${r.errors}`,
  ];
  for (const kind of ERROR_KINDS) {
    if (r.errorsByKind[kind] > 0) lines.push(`    ${kind.padEnd(14)}${r.errorsByKind[kind]}  first: ${r.firstErrors[kind]}`);
  }
  console.log(lines.join("\n"));
}
