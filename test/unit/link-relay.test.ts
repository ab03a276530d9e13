// The slow-link relay (bench/link-relay.mjs) measured through real loopback sockets: the delay it
// adds to a round trip, and the bandwidth it allows for a bulk transfer.
import { connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { parseLatency, parseRate, startLinkRelay, type LinkRelay } from "../../bench/link-relay.mjs";

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as { port: number }).port;
}

async function relayTo(port: number, latencyMs: number, rateBitsPerSecond?: number): Promise<LinkRelay> {
  const relay = await startLinkRelay({ target: { host: "127.0.0.1", port }, latencyMs, rateBitsPerSecond });
  cleanup.push(() => relay.close());
  return relay;
}

async function dial(port: number): Promise<Socket> {
  const socket = connect({ port, host: "127.0.0.1", noDelay: true });
  cleanup.push(() => socket.destroy());
  await new Promise((resolve) => socket.once("connect", resolve));
  return socket;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe("link relay", () => {
  it("adds twice the one-way latency to every round trip", async () => {
    const echo = createServer({ noDelay: true }, (s) => s.pipe(s));
    const relay = await relayTo(await listen(echo), 10);
    const socket = await dial(relay.port);
    const rtts: number[] = [];
    for (let i = 0; i < 15; i++) {
      const t = performance.now();
      socket.write("ping");
      await new Promise((resolve) => socket.once("data", resolve));
      rtts.push(performance.now() - t);
    }
    // Never early (data is held, not just the connection setup); late only by scheduling.
    expect(Math.min(...rtts)).toBeGreaterThanOrEqual(20);
    expect(median(rtts)).toBeLessThan(20 + 50);
  });

  it("caps a 4 MB transfer at the rate (20 Mbit/s: 1.6 s, within 25 %)", async () => {
    const N = 4_000_000;
    let received = 0;
    let allIn!: () => void;
    const done = new Promise<void>((resolve) => (allIn = resolve));
    const sink = createServer((s) =>
      s.on("data", (chunk: Buffer) => {
        received += chunk.length;
        if (received >= N) allIn();
      }),
    );
    const relay = await relayTo(await listen(sink), 2, 20e6);
    const socket = await dial(relay.port);
    const t = performance.now();
    socket.write(Buffer.alloc(N, 0x5a));
    await done;
    const seconds = (performance.now() - t) / 1000;
    const bitsPerSecond = (N * 8) / seconds;
    expect(received).toBe(N);
    expect(bitsPerSecond).toBeGreaterThan(20e6 * 0.75);
    expect(bitsPerSecond).toBeLessThan(20e6 * 1.25);
  });

  it("delivers everything and the half-close after the delayed data", async () => {
    // The server answers only once the client has finished sending, then closes.
    const server = createServer({ allowHalfOpen: true }, (s) => {
      const parts: Buffer[] = [];
      s.on("data", (c: Buffer) => parts.push(c)).on("end", () => s.end(Buffer.concat(parts).reverse()));
    });
    const relay = await relayTo(await listen(server), 5, 100e6);
    const socket = await dial(relay.port);
    const payload = Buffer.from(Array.from({ length: 300_000 }, (_, i) => i % 251));
    const parts: Buffer[] = [];
    const ended = new Promise((resolve) => socket.on("data", (c: Buffer) => parts.push(c)).on("end", resolve));
    socket.end(payload);
    await ended;
    expect(Buffer.concat(parts).equals(Buffer.from(payload).reverse())).toBe(true);
  });

  it("parses tc-style rates and latencies", () => {
    expect(parseRate("100mbit")).toBe(100e6);
    expect(parseRate("1gbit")).toBe(1e9);
    expect(parseRate("500kbit")).toBe(500e3);
    expect(parseLatency("10ms")).toBe(10);
    expect(parseLatency("0.5s")).toBe(500);
    expect(() => parseRate("fast")).toThrow(/--rate/);
  });
});
