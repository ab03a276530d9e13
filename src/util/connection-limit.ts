// A fetch that keeps at most `max` responses open at once. Platforms cap simultaneous outgoing
// connections (Workers: 6 per invocation) and make the excess wait, which deadlocks a caller that
// holds open bodies while it starts another request; queueing here, in order, makes the limit explicit.
// A slot is held from the request until the response body has been read, cancelled or has failed.

export function limitConnections(fetchImpl: typeof fetch, max: number): typeof fetch {
  let active = 0;
  const waiting: (() => void)[] = [];
  const acquire = async () => {
    if (active < max) {
      active++;
      return;
    }
    await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };

  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    await acquire();
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
