// `skiff check-ranges`: probe a blob URL for HTTP Range correctness (src/ranges/check.ts does the
// probing) and print a table, or JSON for scripts. Exit 0 when nothing failed, 1 when a case failed
// or the URL could not be checked, 2 for usage errors.
import { mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { nodeHasher } from "../hash/node.ts";
import { CASES, CheckError, checkRanges, type RangeReport } from "../ranges/check.ts";
import { memoryStore, type BodyStore } from "../ranges/store.ts";
import { withTimeouts } from "../util/fetch-timeouts.ts";
import { headerFlag, integerFlag, parseFlags, UsageError } from "./args.ts";

export const checkRangesHelp = `Usage: skiff check-ranges URL [options]

Probes a blob URL (a registry blob, a CDN URL, a skiff data or chunk URL) for HTTP Range handling as
RFC 9110 §14 specifies and lazy-loading clients rely on. One full GET is the reference; every range
answer is compared with its bytes. A URL whose last path segment is sha256:<hex> is also checked
against that digest. Requests send Accept-Encoding: identity and follow redirects.

Options:
  --header 'Name: value'   send this header with every request (repeatable), e.g.
                           --header 'Authorization: Bearer TOKEN'
  --timeout SECONDS        give up on a request after this long without a response or body bytes
                           (default 30)
  --digest sha256:HEX      check the full body against this digest instead of the URL's
  --json                   print the result as JSON: {url, size, digest, ok, cases: [{name, kind, result, ok, detail}]}
  -h, --help               show this help

Cases (FAIL = a wrong answer, or one a lazy client cannot use; WARN = an alternative the RFC allows):
${CASES.map((c) => `  ${c.name.padEnd(28)}${c.kind.padEnd(10)}${c.why}`).join("\n")}

Exit status: 0 when no case failed (warnings allowed), 1 when one did or the URL cannot be fetched
(unreachable, or the GET answers 4xx/5xx), 2 for usage errors.`;

/** Blobs above this (or of unknown size) are kept in a temp file rather than in memory. */
const MEMORY_BYTES = 256 * 1024 * 1024;

export async function checkRangesCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    argv,
    { json: { type: "boolean" }, header: { type: "string", multiple: true }, timeout: { type: "string" }, digest: { type: "string" } },
    true,
  );
  if (values.help) {
    console.log(checkRangesHelp);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError("expected one URL (see --help)");
  const url = positionals[0]!;
  if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol)) throw new UsageError(`not an http(s) URL: ${JSON.stringify(url)}`);
  const headers = (values.header ?? []).map(headerFlag);
  if (values.digest !== undefined && !/^sha256:[0-9a-f]{64}$/.test(values.digest)) throw new UsageError(`--digest must be sha256:<64 hex>, got ${JSON.stringify(values.digest)}`);
  const ms = integerFlag(values.timeout, "timeout", 30, 1, 86_400) * 1000;

  let report: RangeReport;
  try {
    report = await checkRanges(url, {
      fetch: withTimeouts(fetch, { headersMs: ms, idleMs: ms }),
      headers,
      digest: values.digest,
      hasher: nodeHasher,
      openStore: async (n) => (n !== undefined && n <= MEMORY_BYTES ? memoryStore(n) : fileStore()),
    });
  } catch (err) {
    if (!(err instanceof CheckError)) throw err;
    if (values.json) console.log(JSON.stringify({ url, ok: false, error: err.message, cases: [] }, null, 2));
    process.stderr.write(`skiff check-ranges: ${err.message}\n`);
    return 1;
  }
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else console.log(table(report));
  const failed = report.cases.filter((c) => !c.ok).map((c) => c.name);
  if (failed.length > 0) process.stderr.write(`skiff check-ranges: failed: ${failed.join(", ")}\n`);
  return failed.length > 0 ? 1 : 0;
}

function table(r: RangeReport): string {
  const rows = [["CASE", "KIND", "RESULT", "DETAIL"], ...r.cases.map((c) => [c.name, c.kind, c.result, c.detail])];
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i]!.length)));
  const lines = rows.map((row) => row.map((cell, i) => (i < 3 ? cell.padEnd(w[i]!) : cell)).join("  "));
  const count = (res: string) => r.cases.filter((c) => c.result === res).length;
  const failed = r.cases.filter((c) => !c.ok).map((c) => c.name);
  const summary = failed.length > 0 ? `FAIL: ${failed.join(", ")}` : `OK: no case failed${count("WARN") > 0 ? ` (${count("WARN")} warning${count("WARN") > 1 ? "s" : ""})` : ""}`;
  return [`${r.url}  (${r.size} bytes${r.digest ? `, ${r.digest}` : ""})`, "", ...lines, "", summary].join("\n");
}

/** The full body in a temp file (removed on close): big blobs are not held in memory. */
async function fileStore(): Promise<BodyStore> {
  const dir = await mkdtemp(join(tmpdir(), "skiff-check-ranges-"));
  const fh = await open(join(dir, "body"), "w+");
  let size = 0;
  return {
    get size() {
      return size;
    },
    async append(chunk) {
      await fh.write(chunk, 0, chunk.length, size);
      size += chunk.length;
    },
    async read(offset, length) {
      const n = Math.max(0, Math.min(length, size - offset));
      const buf = new Uint8Array(n);
      const { bytesRead } = await fh.read(buf, 0, n, offset);
      return buf.subarray(0, bytesRead);
    },
    async close() {
      await fh.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
