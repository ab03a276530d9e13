// A fetch that gives up on a silent peer: no response headers within `headersMs`, or no body bytes
// for `idleMs` between two pieces. Node's entry gets this from undici's pool options; runtimes whose
// fetch has no such knobs (Deno, Workers) wrap it with this. The idle limit is per piece, not per
// body, so a large blob that keeps flowing is never cut off.

export interface FetchTimeouts {
  headersMs: number;
  idleMs: number;
}

/** Every runtime's limits on an upstream: 30 s for the response headers, 60 s of silence within a body. */
export const UPSTREAM_TIMEOUTS: FetchTimeouts = { headersMs: 30_000, idleMs: 60_000 };

export function withTimeouts(fetchImpl: typeof fetch, t: FetchTimeouts): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const controller = new AbortController();
    const signal = init?.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;
    const expire = (what: string, ms: number) => setTimeout(() => controller.abort(new Error(`${what} within ${ms} ms`)), ms);
    const headersTimer = expire("no response headers", t.headersMs);
    let res: Response;
    try {
      res = await fetchImpl(input, { ...init, signal });
    } finally {
      clearTimeout(headersTimer);
    }
    if (!res.body) return res;
    const reader = res.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        const idleTimer = expire("no body bytes", t.idleMs);
        try {
          const { done, value } = await reader.read();
          if (done) c.close();
          else c.enqueue(value);
        } catch (err) {
          c.error(controller.signal.aborted ? controller.signal.reason : err);
        } finally {
          clearTimeout(idleTimer);
        }
      },
      cancel: (reason) => reader.cancel(reason),
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}
