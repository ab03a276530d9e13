import { afterEach, describe, expect, it } from "vitest";
import { withTimeouts } from "../../src/util/fetch-timeouts.ts";
import { listen, type Listener } from "./fakes.ts";

const open: Listener[] = [];
afterEach(async () => {
  for (const l of open.splice(0)) await l.close();
});

describe("withTimeouts", () => {
  it("rejects when the response headers don't come in time", async () => {
    const l = await listen(() => {}); // never answers
    open.push(l);
    const f = withTimeouts(fetch, { headersMs: 200, idleMs: 5000 });
    const started = Date.now();
    await expect(f(`${l.url}/`)).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it("errors the body when it stalls between pieces, but lets a slow steady body through", async () => {
    const l = await listen((req, res) => {
      res.writeHead(200, { "Content-Type": "application/octet-stream" });
      let sent = 0;
      // /steady: a piece every 100 ms, 6 pieces; /stall: one piece, then silence.
      const steady = req.url === "/steady";
      const tick = () => {
        res.write(Buffer.alloc(1000, 1));
        sent++;
        if (!steady) return;
        if (sent === 6) res.end();
        else setTimeout(tick, 100);
      };
      tick();
    });
    open.push(l);
    const f = withTimeouts(fetch, { headersMs: 2000, idleMs: 400 });
    const steady = await f(`${l.url}/steady`);
    expect((await steady.arrayBuffer()).byteLength).toBe(6000);
    const stalled = await f(`${l.url}/stall`);
    const started = Date.now();
    await expect(stalled.arrayBuffer()).rejects.toThrow(/no body bytes within 400 ms/);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
