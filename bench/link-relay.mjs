// A slow link for benchmarks, in userspace: a TCP relay that adds one-way latency in each direction
// (so RTT grows by 2 × latency) and caps bandwidth per direction, the cap shared by all of the
// relay's connections as on one physical link. No root, no qdisc; see docs/benchmarks.md "Slow link".
//
//   node bench/link-relay.mjs --listen 127.0.0.1:PORT --target 127.0.0.1:PORT [--latency 10ms] [--rate 100mbit]
//
// Model, per direction: bytes are serialised onto the link in arrival order at the rate (a token
// bucket kept as a virtual clock, with a small burst), then each piece is released `latency` after
// its serialisation ends. Data is delayed, not just connection setup. Memory is bounded: when a
// connection's queue (waiting + in flight) exceeds its bound the source socket is paused, and a
// destination that does not drain stops releases, so backpressure reaches the sender.
import { createConnection, createServer } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const PIECE = 16 * 1024; // serialise in pieces so a large read does not arrive as one late lump
const MIN_QUEUE = 1024 * 1024;

/** One direction of the link: a FIFO transmitter shared by every connection's pipe in that direction. */
class Link {
  #freeAt = 0; // when the transmitter is next idle (performance.now() ms)
  constructor(bytesPerMs, burstBytes) {
    this.bytesPerMs = bytesPerMs;
    this.burstMs = bytesPerMs === Infinity ? 0 : burstBytes / bytesPerMs;
  }
  /** Reserves the link for n bytes; returns when their serialisation ends. */
  transmit(n, now) {
    if (this.bytesPerMs === Infinity) return now;
    const start = Math.max(this.#freeAt, now - this.burstMs); // an idle link may send a burst at once
    this.#freeAt = start + n / this.bytesPerMs;
    return Math.max(now, this.#freeAt);
  }
}

/** source → dest through a link, with the link's latency. */
class Pipe {
  #queue = []; // [releaseAt, chunk], releaseAt non-decreasing
  #head = 0;
  #queued = 0;
  #timer = null;
  #blocked = false; // dest's buffer is full: wait for 'drain'
  #ended = false;

  constructor(source, dest, link, latencyMs, bound) {
    Object.assign(this, { source, dest, link, latencyMs, bound });
    source.on("data", (chunk) => this.#push(chunk));
    source.on("end", () => {
      this.#ended = true;
      this.#flush();
    });
    dest.on("drain", () => {
      this.#blocked = false;
      this.#flush();
    });
  }

  #push(chunk) {
    if (this.dest.destroyed) return this.#drop();
    const now = performance.now();
    for (let at = 0; at < chunk.length; at += PIECE) {
      const piece = chunk.subarray(at, at + PIECE);
      this.#queue.push([this.link.transmit(piece.length, now) + this.latencyMs, piece]);
      this.#queued += piece.length;
    }
    if (this.#queued > this.bound) this.source.pause();
    this.#flush();
  }

  /** Writes every piece whose time has come, then waits for the next one (never releasing early). */
  #flush() {
    if (this.dest.destroyed) return this.#drop();
    if (this.#timer || this.#blocked) return;
    const now = performance.now();
    // The pieces due now leave in one writev: a write call each cost this process more CPU than
    // the bytes did.
    this.dest.cork();
    while (this.#head < this.#queue.length && this.#queue[this.#head][0] <= now) {
      const piece = this.#queue[this.#head++][1];
      this.#queued -= piece.length;
      if (!this.dest.write(piece)) {
        this.#blocked = true;
        break;
      }
    }
    this.dest.uncork();
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    if (this.#queued <= this.bound / 2 && this.source.isPaused()) this.source.resume();
    if (this.#blocked) return;
    if (this.#head < this.#queue.length) {
      // setTimeout's clock is coarser than performance.now(): a timer that fires early just re-arms.
      const wait = Math.max(1, Math.ceil(this.#queue[this.#head][0] - now));
      this.#timer = setTimeout(() => {
        this.#timer = null;
        this.#flush();
      }, wait);
    } else if (this.#ended && !this.dest.writableEnded) {
      this.dest.end(); // the half-close travels with the data, after the last piece
    }
  }

  /** The destination is gone: forget what was queued for it and let the source drain into nothing. */
  #drop() {
    this.stop();
    this.#queue = [];
    this.#head = 0;
    this.#queued = 0;
    if (this.source.isPaused()) this.source.resume();
  }

  stop() {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/**
 * Starts a relay on host:port (default 127.0.0.1, any free port) to target.
 * latencyMs: one-way delay per direction; rateBitsPerSecond: cap per direction (0 or Infinity: none).
 */
export async function startLinkRelay({ target, latencyMs = 0, rateBitsPerSecond = Infinity, host = "127.0.0.1", port = 0 }) {
  if (!(latencyMs >= 0)) throw new Error(`latencyMs must be ≥ 0, got ${latencyMs}`);
  const rate = rateBitsPerSecond > 0 ? rateBitsPerSecond : Infinity;
  const bytesPerMs = rate / 8 / 1000;
  // A burst of 5 ms of traffic (at least one piece): smooth like a real link, not one packet at a time.
  const burst = Math.max(PIECE, bytesPerMs * 5);
  const up = new Link(bytesPerMs, burst);
  const down = new Link(bytesPerMs, burst);
  // Enough queue per connection to keep the link full for two round trips (its bandwidth-delay
  // product), so the bound limits memory without limiting throughput.
  const bound = rate === Infinity ? 4 * MIN_QUEUE : Math.max(MIN_QUEUE, Math.ceil(4 * bytesPerMs * latencyMs));
  const sockets = new Set();

  // Half-open sockets: a FIN from one side must not close the other direction, whose data may
  // still be on the (delayed) link; each Pipe ends its destination once it has delivered everything.
  const server = createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
    const upstream = createConnection({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true });
    sockets.add(client).add(upstream);
    const pipes = [new Pipe(client, upstream, up, latencyMs, bound), new Pipe(upstream, client, down, latencyMs, bound)];
    // An error on either side ends both. A clean close ends only its own socket: what it sent is
    // still on the link and is delivered, followed by its FIN (see Pipe). Data for a socket that
    // has closed is dropped, as the peer of a closed TCP socket would see it refused.
    const teardown = () => {
      for (const p of pipes) p.stop();
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", teardown).on("close", () => {
        sockets.delete(s);
        if (client.destroyed && upstream.destroyed) for (const p of pipes) p.stop();
      });
    }
  });
  await new Promise((resolve, reject) => server.once("error", reject).listen(port, host, resolve));
  return {
    port: server.address().port,
    /** Drops every open connection at once, with what is still on the link, as a crashed host would. */
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** "10ms", "1.5ms", "0.2s", "0" → ms. */
export function parseLatency(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text);
  if (!m) throw new Error(`--latency must be like 10ms or 0.5s, got ${JSON.stringify(text)}`);
  return Number(m[1]) * (m[2] === "s" ? 1000 : 1);
}

/** tc's units: "100mbit", "1gbit", "500kbit", "64000bit" (decimal); "0" means no cap. */
export function parseRate(text) {
  const m = /^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)?$/i.exec(text);
  if (!m) throw new Error(`--rate must be like 100mbit, 20mbit or 1gbit, got ${JSON.stringify(text)}`);
  return Number(m[1]) * { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 }[(m[2] ?? "bit").toLowerCase()];
}

function hostPort(text, flag) {
  const m = /^(.+):(\d+)$/.exec(text ?? "");
  if (!m) throw new Error(`--${flag} must be HOST:PORT, got ${JSON.stringify(text ?? "")}`);
  return { host: m[1], port: Number(m[2]) };
}

async function main() {
  try {
    const { values } = parseArgs({
      options: { listen: { type: "string" }, target: { type: "string" }, latency: { type: "string" }, rate: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      console.log("Usage: node bench/link-relay.mjs --listen HOST:PORT --target HOST:PORT [--latency 10ms] [--rate 100mbit]");
      return;
    }
    const listen = hostPort(values.listen ?? "127.0.0.1:0", "listen");
    const relay = await startLinkRelay({
      target: hostPort(values.target, "target"),
      latencyMs: parseLatency(values.latency ?? "0ms"),
      rateBitsPerSecond: parseRate(values.rate ?? "0"),
      host: listen.host,
      port: listen.port,
    });
    console.log(`link-relay listening on ${listen.host}:${relay.port}`);
    const stop = () => relay.close().then(() => process.exit(0));
    process.on("SIGINT", stop).on("SIGTERM", stop);
  } catch (err) {
    process.stderr.write(`link-relay: ${err.message}\n`);
    process.exitCode = 2;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await main();
