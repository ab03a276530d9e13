// A fetch that keeps at most `max` responses open at once. Platforms cap simultaneous outgoing
// connections (Workers: 6 per invocation) and make the excess wait, which deadlocks a caller that
// holds open bodies while it starts another request; queueing here, in order, makes the limit explicit.
// A slot is held from the request until the response body has been read, cancelled or has failed.
// With `scope`, the limit is kept per scope: on Workers the platform counts per invocation, not per
// isolate, so the entry passes the current invocation (src/runtime/worker.ts); one isolate serving
// many requests at once may then have 6 open per request, and one request never more than 6.

interface Slots {
  active: number;
  waiting: (() => void)[];
}

export function limitConnections(fetchImpl: typeof fetch, max: number, scope?: () => object | undefined): typeof fetch {
  const shared: Slots = { active: 0, waiting: [] };
  const scoped = new WeakMap<object, Slots>();
  const slotsOf = (): Slots => {
    const key = scope?.();
    if (key === undefined) return shared;
    let slots = scoped.get(key);
    if (!slots) scoped.set(key, (slots = { active: 0, waiting: [] }));
    return slots;
  };
  const acquire = async (slots: Slots) => {
    if (slots.active < max) {
      slots.active++;
      return;
    }
    await new Promise<void>((resolve) => slots.waiting.push(resolve));
  };
  const releaseOf = (slots: Slots) => () => {
    const next = slots.waiting.shift();
    if (next) next();
    else slots.active--;
  };

  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    // The scope of the caller: a body read later (by whatever) gives its slot back to the same one.
    const slots = slotsOf();
    const release = releaseOf(slots);
    await acquire(slots);
    let res: Response;
    try {
      res = await fetchImpl(input, init);
    } catch (err) {
      release();
      throw err;
    }
    if (!res.body) {
      release();
      return res;
    }
    let released = false;
    const done = () => {
      if (!released) {
        released = true;
        release();
      }
    };
    const reader = res.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done: end, value } = await reader.read();
          if (end) {
            done();
            controller.close();
          } else controller.enqueue(value);
        } catch (err) {
          done();
          controller.error(err);
        }
      },
      async cancel(reason) {
        done();
        await reader.cancel(reason);
      },
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  }) as typeof fetch;
}
