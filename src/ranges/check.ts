// Probes one blob URL for HTTP Range correctness (RFC 9110 §14), case by case, comparing every
// answer with the bytes of one full GET. Web-standard (fetch, streams, Uint8Array); the caller passes
// fetch, so tests inject one. Results: FAIL = an answer that is wrong (bad bytes or headers) or that
// a lazy-loading client cannot live with; WARN = an alternative RFC 9110 allows (usually a 200 that
// ignored the Range): safe, but it costs a client a whole blob.
import type { HasherFactory } from "../hash/hasher.ts";
import { nobleHasher } from "../hash/noble.ts";
import { byterangesBoundary, parseByteranges } from "./multipart.ts";
import { memoryStore, type BodyStore } from "./store.ts";
import { errorMessage } from "../util/error-message.ts";
import { concatBytes } from "../util/streams.ts";

export type Kind = "mandatory" | "advisory";
export type Result = "PASS" | "WARN" | "FAIL";

export interface CaseReport {
  name: string;
  kind: Kind;
  result: Result;
  /** false only for FAIL. */
  ok: boolean;
  detail: string;
}

export interface RangeReport {
  url: string;
  /** The blob's length as learned (HEAD, a bytes=0-0 range, or the full GET). */
  size: number;
  /** The digest the full body was checked against, if any. */
  digest?: string;
  ok: boolean;
  cases: CaseReport[];
}

/** Every case, in the order run, with its kind and why it has that kind (shown by --help and docs). */
export const CASES: readonly { name: string; kind: Kind | "depends"; request: string; why: string }[] = [
  { name: "head", kind: "advisory", request: "HEAD", why: "presigned CDN URLs may refuse HEAD; a client can size the blob with a range GET" },
  { name: "accept-ranges", kind: "advisory", request: "HEAD", why: "RFC 9110 §14.3: clients may send Range without seeing Accept-Ranges: bytes" },
  { name: "size", kind: "mandatory", request: "HEAD, else GET bytes=0-0", why: "readers plan reads from the length: HEAD Content-Length or a Content-Range must give it, and agree with the body" },
  { name: "full-get", kind: "mandatory", request: "GET", why: "200 with exactly size bytes (and the URL's sha256 digest): the reference for all ranges" },
  { name: "single-range", kind: "mandatory", request: "bytes=a-b", why: "the read every lazy client makes" },
  { name: "open-ended", kind: "mandatory", request: "bytes=a-", why: "clients read 'from here to the end' (tails, resumed pulls)" },
  { name: "suffix", kind: "advisory", request: "bytes=-n", why: "lazy agents know the size and send explicit ranges; a 200 only costs footer readers a full fetch" },
  { name: "clamp", kind: "mandatory", request: "bytes=a-(size+1000)", why: "readers round reads up to a chunk: a 416 for the last chunk breaks them" },
  { name: "unsatisfiable", kind: "mandatory", request: "bytes=(size+10)-(size+20)", why: "a read wholly past the end must fail (416), not return other bytes" },
  { name: "unsatisfiable-content-range", kind: "advisory", request: "(same)", why: "RFC 9110 §15.5.17: a 416 SHOULD carry Content-Range: bytes */size" },
  { name: "invalid-syntax", kind: "advisory", request: "bytes=abc", why: "RFC 9110 §14.2: ignore it (200); a 416 is common and harmless, clients never send one" },
  { name: "reversed-range", kind: "advisory", request: "bytes=5-2", why: "as invalid-syntax: a range whose last byte precedes its first is invalid" },
  { name: "multi-range", kind: "advisory", request: "bytes=0-9,20-29", why: "the RFC allows a 200 (clients fall back to one range each); a broken multipart corrupts reads: FAIL" },
  { name: "if-range-match", kind: "advisory", request: "If-Range: current validator", why: "a 200 is safe, only wasteful" },
  { name: "if-range-stale", kind: "depends", request: "If-Range: stale validator", why: "mandatory when the server sends a strong ETag: a 206 could splice changed content; else advisory" },
];

export interface CheckOptions {
  fetch: typeof fetch;
  /** Sent with every request (e.g. Authorization); Accept-Encoding is always identity. */
  headers?: [string, string][];
  /** sha256 digest the full body must have; default: the URL path's last segment when it is one. */
  digest?: string;
  hasher?: HasherFactory;
  /** Where to keep the full body; default in memory (up to 1 GiB). */
  openStore?: (sizeHint: number | undefined) => Promise<BodyStore>;
}

/** The blob cannot be checked at all: unreachable, or the GET answered an error. */
export class CheckError extends Error {}

/** A 200's body is compared for this many bytes (its length comes from Content-Length): a server
 * that ignores ranges would otherwise cost a full download per case. */
const PREFIX_BYTES = 1 << 20;
/** A multipart answer to the multi-range case carries ~20 bytes; more than this is not one. */
const MULTIPART_CAP = 1 << 20;
const MAX_READS = 10_000_000;

interface Outcome {
  result: Result;
  detail: string;
}
const pass = (detail: string): Outcome => ({ result: "PASS", detail });
const warn = (detail: string): Outcome => ({ result: "WARN", detail });
const fail = (detail: string): Outcome => ({ result: "FAIL", detail });

/** The sha256 digest named by the URL's last path segment (/v2/<name>/blobs/sha256:<hex>), if any. */
export function digestInUrl(url: string): string | undefined {
  const last = decodeURIComponent(new URL(url).pathname.split("/").pop() ?? "");
  return /^sha256:[0-9a-f]{64}$/.test(last) ? last : undefined;
}

export async function checkRanges(url: string, o: CheckOptions): Promise<RangeReport> {
  const probe = new Probe(url, o);
  try {
    return await probe.run();
  } finally {
    await probe.store?.close();
  }
}

interface BodyCheck {
  received: number;
  /** More bytes arrived than expected. */
  extra: boolean;
  /** Stopped after `limit` bytes on purpose. */
  partial: boolean;
  mismatchAt?: number;
  error?: string;
}

class Probe {
  store: BodyStore | undefined;
  private size = 0;
  private readonly cases: CaseReport[] = [];

  constructor(
    private readonly url: string,
    private readonly o: CheckOptions,
  ) {}

  private request(method: "GET" | "HEAD", extra: Record<string, string> = {}): Promise<Response> {
    const headers = new Headers(this.o.headers);
    for (const [k, v] of Object.entries(extra)) headers.set(k, v);
    // fetch would decompress a Content-Encoding transparently; the bytes must be the blob's own.
    headers.set("accept-encoding", "identity");
    return this.o.fetch(this.url, { method, headers, redirect: "follow" });
  }

  private add(name: string, kind: Kind, out: Outcome): void {
    this.cases.push({ name, kind, result: out.result, ok: out.result !== "FAIL", detail: out.detail });
  }

  /** Run one case; a request that fails (reset, timeout) is that case's failure. */
  private async run1(name: string, kind: Kind, fn: () => Promise<Outcome>): Promise<void> {
    let out: Outcome;
    try {
      out = await fn();
    } catch (err) {
      out = fail(`request failed: ${errorMessage(err)}`);
    }
    this.add(name, kind, out);
  }

  async run(): Promise<RangeReport> {
    let head: Response;
    try {
      head = await this.request("HEAD");
      await head.body?.cancel();
    } catch (err) {
      throw new CheckError(`cannot reach ${this.url}: ${errorMessage(err)}`);
    }
    const headLength = head.ok ? headerInt(head, "content-length") : undefined;
    this.add("head", "advisory", head.status === 200 && headLength !== undefined ? pass(`200, Content-Length ${headLength}`) : warn(head.ok ? `${head.status} without Content-Length` : `HEAD answered ${head.status}`));

    // Size: HEAD, else the complete length of a one-byte range (what a client without HEAD does).
    let sizeFrom = headLength !== undefined ? `HEAD Content-Length ${headLength}` : "";
    let size = headLength;
    if (size === undefined) {
      const r = await this.request("GET", { range: "bytes=0-0" }).catch(() => undefined);
      await r?.body?.cancel();
      const total = /^bytes 0-0\/(\d+)$/.exec(r?.headers.get("content-range")?.trim() ?? "")?.[1];
      if (r?.status === 206 && total !== undefined) {
        size = Number(total);
        sizeFrom = `Content-Range of bytes=0-0 (${size})`;
      }
    }

    const digest = this.o.digest ?? digestInUrl(this.url);
    const full = await this.fullGet(size);
    const validators = validatorsOf(head.ok ? head : full.res, full.res);
    const acceptRanges = (head.ok ? head : full.res).headers.get("accept-ranges");
    this.add("accept-ranges", "advisory", acceptRanges !== null && /(^|,)\s*bytes\s*(,|$)/i.test(acceptRanges) ? pass("Accept-Ranges: bytes") : warn(acceptRanges === null ? "no Accept-Ranges header" : `Accept-Ranges: ${acceptRanges}`));

    if (size === undefined) this.add("size", "mandatory", fail(`neither HEAD Content-Length nor a bytes=0-0 Content-Range gives the size (body has ${full.length} bytes)`));
    else if (size !== full.length) this.add("size", "mandatory", fail(`${sizeFrom}, but the full GET has ${full.length} bytes`));
    else this.add("size", "mandatory", pass(`${size} bytes, from ${sizeFrom}`));
    // A complete body is the truth when HEAD disagrees: only `size` fails then, not every range case.
    this.size = full.error === undefined ? full.length : (size ?? full.length);

    this.add("full-get", "mandatory", this.fullGetOutcome(full, digest));

    if (this.size === 0) {
      this.add("ranges", "advisory", warn("empty blob: no range of it is satisfiable, range cases skipped"));
      return this.report(digest);
    }
    await this.rangeCases(validators);
    return this.report(digest);
  }

  private report(digest: string | undefined): RangeReport {
    return { url: this.url, size: this.size, ...(digest ? { digest } : {}), ok: this.cases.every((c) => c.ok), cases: this.cases };
  }

  private async fullGet(sizeHint: number | undefined) {
    let res: Response;
    try {
      res = await this.request("GET");
    } catch (err) {
      throw new CheckError(`cannot GET ${this.url}: ${errorMessage(err)}`);
    }
    if (res.status >= 400) {
      await res.body?.cancel();
      throw new CheckError(`GET ${this.url} answered ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`);
    }
    const store = (this.store = await (this.o.openStore ?? (async (n) => memoryStore(n)))(sizeHint ?? headerInt(res, "content-length")));
    const hash = (this.o.hasher ?? nobleHasher)("sha256");
    let error: string | undefined;
    if (res.body !== null) {
      const reader = res.body.getReader();
      try {
        for (let i = 0; i < MAX_READS; i++) {
          const { done, value } = await reader.read();
          if (done) break;
          hash.update(value);
          // Past the store's limit nothing can be compared: not a finding about the server.
          await store.append(value).catch((err: unknown) => {
            throw new CheckError(errorMessage(err));
          });
        }
      } catch (err) {
        await reader.cancel().catch(() => undefined);
        if (err instanceof CheckError) throw err;
        error = errorMessage(err);
      }
    }
    return { res, length: store.size, sha256: `sha256:${hash.hex()}`, error };
  }

  private fullGetOutcome(full: { res: Response; length: number; sha256: string; error?: string }, digest: string | undefined): Outcome {
    const { res } = full;
    if (full.error !== undefined) return fail(`body failed after ${full.length} bytes: ${full.error}`);
    if (res.status !== 200) return fail(`status ${res.status} to a GET without Range (want 200)`);
    const enc = encodingProblem(res);
    if (enc) return fail(enc);
    const cl = headerInt(res, "content-length");
    if (cl !== undefined && cl !== full.length) return fail(`Content-Length ${cl}, body ${full.length} bytes`);
    if (full.length !== this.size) return fail(`body ${full.length} bytes, size ${this.size}`);
    if (digest !== undefined && digest !== full.sha256) return fail(`digest mismatch: body is ${full.sha256}, URL says ${digest}`);
    return pass(`200, ${full.length} bytes${digest ? ", sha256 matches the digest" : ""}`);
  }

  private async rangeCases(v: Validators): Promise<void> {
    const size = this.size;
    const a = Math.floor(size / 3);
    const b = Math.min(size - 1, a + 4095);
    await this.run1("single-range", "mandatory", () => this.expect206("mandatory", `bytes=${a}-${b}`, a, b));
    const half = Math.floor(size / 2);
    await this.run1("open-ended", "mandatory", () => this.expect206("mandatory", `bytes=${half}-`, half, size - 1));
    const n = Math.min(size, 100);
    await this.run1("suffix", "advisory", () => this.expect206("advisory", `bytes=-${n}`, size - n, size - 1));
    const tail = Math.max(0, size - 10);
    await this.run1("clamp", "mandatory", () => this.expect206("mandatory", `bytes=${tail}-${size + 1000}`, tail, size - 1));
    await this.unsatisfiable();
    await this.run1("invalid-syntax", "advisory", () => this.expectIgnored("bytes=abc"));
    await this.run1("reversed-range", "advisory", () => this.expectIgnored("bytes=5-2"));
    await this.run1("multi-range", "advisory", () => this.multiRange());
    await this.ifRange(v, a, b);
  }

  /** A range answer: 206 with exactly these bytes; a 200 (Range ignored) fails a mandatory case. */
  private async expect206(kind: Kind, range: string, start: number, end: number, extra: Record<string, string> = {}): Promise<Outcome> {
    const res = await this.request("GET", { ...extra, range });
    if (res.status === 206) return this.check206(res, start, end);
    if (res.status === 200) {
      const problem = await this.check200(res);
      if (problem) return fail(`200 where 206 was due, and ${problem}`);
      return kind === "mandatory" ? fail("200 where 206 was due (Range ignored, full body sent)") : warn("200 full body: Range ignored (RFC 9110 allows)");
    }
    await res.body?.cancel();
    const why = res.status === 416 ? `416 for a satisfiable range (want 206 bytes ${start}-${end}/${this.size})` : `status ${res.status} where 206 was due`;
    return kind === "mandatory" ? fail(why) : warn(why);
  }

  /** A 206 must say exactly which bytes it holds and hold exactly those. */
  private async check206(res: Response, start: number, end: number): Promise<Outcome> {
    const want = `bytes ${start}-${end}/${this.size}`;
    const len = end - start + 1;
    const enc = encodingProblem(res);
    const cr = res.headers.get("content-range");
    const problem = enc ?? (cr === null ? `206 without Content-Range (want ${want})` : normalRange(cr) !== want ? `wrong Content-Range "${cr}" (want "${want}")` : undefined);
    if (problem !== undefined) {
      await res.body?.cancel();
      return fail(problem);
    }
    const bodyProblem = describeBody(await compareBody(res, this.store!, start, len), start, len);
    if (bodyProblem) return fail(bodyProblem);
    const cl = headerInt(res, "content-length");
    if (cl !== undefined && cl !== len) return fail(`Content-Length ${cl} for a ${len}-byte range`);
    return pass(`206 ${want}, ${len} bytes match`);
  }

  /** A 200 to a ranged request: the whole body (its length from Content-Length, a prefix compared). */
  private async check200(res: Response): Promise<string | undefined> {
    const enc = encodingProblem(res);
    const cl = headerInt(res, "content-length");
    if (enc || (cl !== undefined && cl !== this.size)) {
      await res.body?.cancel();
      return enc ?? `Content-Length ${cl}, not the size ${this.size}`;
    }
    return describeBody(await compareBody(res, this.store!, 0, this.size, PREFIX_BYTES), 0, this.size);
  }

  private async unsatisfiable(): Promise<void> {
    let status = 0;
    let contentRange: string | null = null;
    await this.run1("unsatisfiable", "mandatory", async () => {
      const res = await this.request("GET", { range: `bytes=${this.size + 10}-${this.size + 20}` });
      status = res.status;
      contentRange = res.headers.get("content-range");
      await res.body?.cancel();
      if (status === 416) return pass("416");
      if (status === 206) return fail(`206 "${contentRange}" for a range wholly past the end`);
      return fail(`status ${status} where 416 was due`);
    });
    if (status !== 416) return;
    const want = `bytes */${this.size}`;
    this.add(
      "unsatisfiable-content-range",
      "advisory",
      contentRange === null ? warn(`416 without Content-Range (want "${want}")`) : normalRange(contentRange) === want ? pass(`Content-Range: ${want}`) : fail(`416 with Content-Range "${contentRange}" (want "${want}")`),
    );
  }

  /** An invalid Range: 200 with the whole body (RFC 9110 §14.2), or 416 (tolerated). */
  private async expectIgnored(range: string): Promise<Outcome> {
    const res = await this.request("GET", { range });
    if (res.status === 200) {
      const problem = await this.check200(res);
      return problem ? fail(problem) : pass("200 full body (invalid Range ignored)");
    }
    await res.body?.cancel();
    if (res.status === 416) return warn("416 (RFC 9110 says ignore an invalid Range and send 200)");
    if (res.status === 206) return fail(`206 "${res.headers.get("content-range")}" for an invalid Range`);
    return fail(`status ${res.status} (want 200)`);
  }

  private async multiRange(): Promise<Outcome> {
    const size = this.size;
    const wanted: [number, number][] = size >= 30 ? [[0, 9], [20, 29]] : size >= 3 ? [[0, 0], [2, 2]] : [];
    if (wanted.length === 0) return warn(`blob of ${size} bytes is too small for two separate ranges`);
    const range = `bytes=${wanted.map(([s, e]) => `${s}-${e}`).join(",")}`;
    const res = await this.request("GET", { range });
    if (res.status === 200) {
      const problem = await this.check200(res);
      return problem ? fail(problem) : warn("200 full body: multiple ranges not supported (RFC 9110 allows)");
    }
    if (res.status === 416) {
      await res.body?.cancel();
      return warn("416: multiple ranges refused (RFC 9110 §14.2 allows rejecting; clients fall back)");
    }
    if (res.status !== 206) {
      await res.body?.cancel();
      return fail(`status ${res.status} (want 206 or 200)`);
    }
    const boundary = byterangesBoundary(res.headers.get("content-type"));
    if (boundary === undefined) {
      // RFC 9110 §14.2 lets a server coalesce ranges into one: fine if it covers them all.
      const m = /^bytes (\d+)-(\d+)\/\d+$/.exec(normalRange(res.headers.get("content-range") ?? ""));
      if (m === null) {
        await res.body?.cancel();
        return fail(`206 neither multipart/byteranges nor a Content-Range (Content-Type ${res.headers.get("content-type")})`);
      }
      const [s, e] = [Number(m[1]), Number(m[2])];
      if (wanted.some(([ws, we]) => ws < s || we > e)) {
        await res.body?.cancel();
        return fail(`single part "${m[0]}" does not cover ${range}`);
      }
      const out = await this.check206(res, s, e);
      return out.result === "PASS" ? pass(`206 coalesced into one part, ${m[0]}`) : out;
    }
    const body = await readCapped(res, MULTIPART_CAP);
    if (body.error) return fail(`multipart body failed: ${body.error}`);
    if (body.over) return fail(`multipart body over ${MULTIPART_CAP} bytes for ${range}`);
    let parts;
    try {
      parts = parseByteranges(body.bytes, boundary);
    } catch (err) {
      return fail(`broken multipart: ${errorMessage(err)}`);
    }
    for (const p of parts) {
      if (p.size !== size) return fail(`part "${p.contentRange}": complete length is not ${size}`);
      if (p.end >= size) return fail(`part "${p.contentRange}" ends past the blob`);
      if (!wanted.some(([ws, we]) => p.start <= we && p.end >= ws)) return fail(`part "${p.contentRange}" was not requested`);
      const k = firstDifference(p.data, await this.store!.read(p.start, p.data.length));
      if (k >= 0) return fail(`part "${p.contentRange}": byte ${p.start + k} differs from the full GET`);
    }
    const missing = wanted.find(([ws, we]) => !parts.some((p) => p.start <= ws && p.end >= we));
    if (missing) return fail(`no part holds bytes ${missing[0]}-${missing[1]} (parts: ${parts.map((p) => p.contentRange).join(", ")})`);
    return pass(`206 multipart/byteranges, ${parts.length} parts match`);
  }

  private async ifRange(v: Validators, a: number, b: number): Promise<void> {
    const range = `bytes=${a}-${b}`;
    const current = v.strongEtag ?? v.lastModified;
    if (current === undefined) this.add("if-range-match", "advisory", warn("no strong ETag or Last-Modified to send in If-Range"));
    else {
      await this.run1("if-range-match", "advisory", async () => {
        const out = await this.expect206("advisory", range, a, b, { "if-range": current });
        return out.result === "WARN" ? warn(`If-Range ${current}: ${out.detail}`) : out;
      });
    }
    // A stale validator: another strong ETag when the server uses ETags, else a date before Last-Modified.
    const kind: Kind = v.strongEtag !== undefined ? "mandatory" : "advisory";
    const stale =
      v.strongEtag !== undefined || v.lastModified === undefined
        ? `"skiff-check-ranges-stale${v.strongEtag === '"skiff-check-ranges-stale"' ? "-2" : ""}"`
        : new Date(Date.parse(v.lastModified) - 86_400_000).toUTCString();
    await this.run1("if-range-stale", kind, async () => {
      const res = await this.request("GET", { range, "if-range": stale });
      if (res.status === 200) {
        const problem = await this.check200(res);
        return problem ? fail(problem) : pass(`200 full body for If-Range ${stale}`);
      }
      await res.body?.cancel();
      if (res.status === 206) {
        const why = `206 for a stale If-Range ${stale}: a client could splice changed content`;
        return kind === "mandatory" ? fail(why) : warn(`${why} (no ETag sent, so advisory)`);
      }
      return fail(`status ${res.status} (want 200)`);
    });
  }
}

interface Validators {
  strongEtag?: string;
  lastModified?: string;
}

function validatorsOf(...from: Response[]): Validators {
  const v: Validators = {};
  for (const r of from) {
    const etag = r.headers.get("etag")?.trim();
    // RFC 9110 §13.1.5: If-Range takes only a strong ETag.
    if (v.strongEtag === undefined && etag && etag.startsWith('"')) v.strongEtag = etag;
    const lm = r.headers.get("last-modified")?.trim();
    if (v.lastModified === undefined && lm && !Number.isNaN(Date.parse(lm))) v.lastModified = lm;
  }
  return v;
}

function headerInt(res: Response, name: string): number | undefined {
  const v = res.headers.get(name)?.trim();
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

/** Content-Range with insignificant spacing removed, for comparison. */
function normalRange(v: string): string {
  return v.trim().replace(/^bytes\s+/i, "bytes ").replace(/\s*([-/])\s*/g, "$1");
}

function encodingProblem(res: Response): string | undefined {
  const enc = res.headers.get("content-encoding")?.trim().toLowerCase();
  return enc && enc !== "identity" ? `Content-Encoding: ${enc} despite Accept-Encoding: identity` : undefined;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** Stream a body, comparing it with the reference from `offset`; never buffers it. */
async function compareBody(res: Response, ref: BodyStore, offset: number, length: number, limit = Infinity): Promise<BodyCheck> {
  const out: BodyCheck = { received: 0, extra: false, partial: false };
  if (res.body === null) return out;
  const reader = res.body.getReader();
  try {
    for (let i = 0; i < MAX_READS; i++) {
      const { done, value } = await reader.read();
      if (done) break;
      const pos = out.received;
      out.received += value.length;
      const n = Math.min(value.length, length - pos);
      if (n > 0) {
        const k = firstDifference(value.subarray(0, n), await ref.read(offset + pos, n));
        if (k >= 0) {
          out.mismatchAt = pos + k;
          break;
        }
      }
      if (out.received > length) {
        out.extra = true;
        break;
      }
      if (out.received >= limit && out.received < length) {
        out.partial = true;
        break;
      }
    }
  } catch (err) {
    out.error = errorMessage(err);
  }
  await reader.cancel().catch(() => undefined);
  return out;
}

function describeBody(b: BodyCheck, offset: number, length: number): string | undefined {
  if (b.mismatchAt !== undefined) return `body differs from the full GET at byte ${offset + b.mismatchAt}`;
  if (b.error !== undefined) return `body failed after ${b.received} bytes: ${b.error}`;
  if (b.extra) return `long body: more than ${length} bytes`;
  if (!b.partial && b.received < length) return `short body: ${b.received} of ${length} bytes`;
  return undefined;
}

async function readCapped(res: Response, cap: number): Promise<{ bytes: Uint8Array; over: boolean; error?: string }> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let over = false;
  let error: string | undefined;
  if (res.body !== null) {
    const reader = res.body.getReader();
    try {
      for (let i = 0; i < MAX_READS; i++) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        total += value.length;
        if (total > cap) {
          over = true;
          break;
        }
      }
    } catch (err) {
      error = errorMessage(err);
    }
    await reader.cancel().catch(() => undefined);
  }
  return { bytes: concatBytes(chunks), over, error };
}
