// One Range GET of a converted layer's data blob, answered strictly: exactly 206, exactly the asked
// `Content-Range`, exactly that many body bytes. A registry or CDN that answers 200 with the whole
// blob, or a truncated or padded body, is an error here rather than wrong bytes later.

import type { FetchLike, FetchResponse } from "../../src/client/lazy-api.ts";
import { errorMessage } from "../../src/util/error-message.ts";

export type { FetchLike };

/** A failure worth retrying: the network, or a 5xx/429 from the proxy. */
export class TransientError extends Error {
  override name = "TransientError";
}

export async function fetchRange(fetchImpl: FetchLike, url: string, start: number, end: number, signal: AbortSignal): Promise<Uint8Array> {
  let res: FetchResponse;
  try {
    res = await fetchImpl(url, {
      method: "GET",
      headers: { range: `bytes=${start}-${end}`, "accept-encoding": "identity" },
      signal,
    });
  } catch (err) {
    if (signal.aborted) throw err;
    throw new TransientError(`GET ${url}: ${errorMessage(err)}`);
  }
  if (res.status !== 206) {
    await res.body?.cancel().catch(() => undefined);
    const text = `GET ${url} bytes=${start}-${end}: status ${res.status}, expected 206`;
    throw res.status >= 500 || res.status === 429 ? new TransientError(text) : new Error(text);
  }
  const cr = res.headers.get("content-range");
  const m = cr === null ? null : /^bytes (\d+)-(\d+)\/(\d+)$/.exec(cr);
  if (!m || Number(m[1]) !== start || Number(m[2]) !== end || Number(m[3]) <= end) {
    await res.body?.cancel().catch(() => undefined);
    throw new Error(`GET ${url}: Content-Range ${JSON.stringify(cr)} is not bytes ${start}-${end}/SIZE`);
  }
  return readExactly(res, end - start + 1, url, signal);
}

/** Reads the body, giving up as soon as it is longer than expected; rejects a shorter one. */
async function readExactly(res: FetchResponse, expected: number, url: string, signal: AbortSignal): Promise<Uint8Array> {
  const out = new Uint8Array(expected);
  if (!res.body) {
    if (expected === 0) return out;
    throw new Error(`GET ${url}: no body, expected ${expected} bytes`);
  }
  const reader = res.body.getReader();
  let got = 0;
  try {
    for (;;) {
      let step: ReadableStreamReadResult<Uint8Array>;
      try {
        step = await reader.read();
      } catch (err) {
        if (signal.aborted) throw err;
        throw new TransientError(`GET ${url}: body: ${errorMessage(err)}`);
      }
      if (step.done) break;
      const piece = step.value;
      if (got + piece.length > expected) throw new Error(`GET ${url}: body is longer than the ${expected} bytes asked for`);
      out.set(piece, got);
      got += piece.length;
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
  if (got !== expected) throw new Error(`GET ${url}: body is ${got} bytes, expected ${expected}`);
  return out;
}
