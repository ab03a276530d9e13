// How the Node entry's listeners stop: each stops accepting and closes its idle connections, the
// responses in flight get until the shutdown timeout, and what is still open then is cut.
import { createServer, type Server as HttpServer } from "node:http";
import type { Server } from "node:net";
import { within } from "../util/sleep.ts";
import { answerClientError } from "./node-client-error.ts";
import type { NodeRequestListener } from "./node-tls.ts";

/** A listener's server and how it stops. */
export interface Stoppable {
  server: Server;
  /** Stops accepting and closes idle connections; resolves once every connection has closed. */
  close(): Promise<void>;
  /** Drops every connection at once, where the server can (else the process's exit does). */
  cut?(): void;
}

/**
 * How long a connection busy at the stop may stay idle after its response: a client with more to
 * ask may go on where it is (new connections are refused), and the stop waits a second for it
 * rather than node:http's keep-alive of five.
 */
const DRAIN_KEEP_ALIVE_MS = 1_000;

/** A plain-http server for `listener`. */
export function httpServer(listener: NodeRequestListener): Stoppable & { server: HttpServer } {
  const server = createServer(listener);
  server.on("clientError", answerClientError);
  return {
    server,
    close: () => {
      // Read as each response ends, so it holds for the connections open now.
      server.keepAliveTimeout = Math.min(server.keepAliveTimeout, DRAIN_KEEP_ALIVE_MS);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      return closed;
    },
    cut: () => server.closeAllConnections(),
  };
}

/** `listener`, counting the responses it has in flight. */
export function counted(listener: NodeRequestListener): { listener: NodeRequestListener; inFlight(): number } {
  let inFlight = 0;
  return {
    listener: (req, res) => {
      inFlight++;
      res.once("close", () => inFlight--);
      listener(req, res);
    },
    inFlight: () => inFlight,
  };
}

/** Stops `s`, giving the responses in flight `timeoutMs` (no limit by default); how many were cut. */
export async function stopWithin(s: Stoppable, inFlight: () => number, timeoutMs = Infinity): Promise<number> {
  const closed = s.close();
  if (timeoutMs === Infinity || (await within(timeoutMs, closed)) !== "timeout") {
    await closed;
    return 0;
  }
  const cut = inFlight();
  if (s.cut) {
    s.cut();
    await closed;
  }
  return cut;
}
