// Deno's https port for `skiff serve --tls-cert --tls-key`. Deno.serve negotiates HTTP/2 by ALPN
// itself but can't change its certificate; so a new pair is served by a new Deno.serve bound to the
// same port (SO_REUSEPORT: the kernel spreads new connections over both until the old one is shut
// down), and the old server shuts down gracefully: it stops accepting, lets its requests in flight
// finish and then closes its connections. Deno still marks reusePort over TLS unstable, so the
// tasks in deno.json run with --unstable-net. Type-checked by `deno check`, not by the Node tsc projects.
import type { TlsPair } from "./tls-pair.ts";

export interface DenoTlsServer {
  hostname: string;
  port: number;
  /** New connections get `pair`; throws, keeping the old server, when the port can't be bound again. */
  setPair(pair: TlsPair): void;
  close(): Promise<void>;
}

export function denoTlsServer(hostname: string, port: number, pair: TlsPair, handler: Deno.ServeHandler): DenoTlsServer {
  // With SO_REUSEPORT a second skiff on this port would share it silently: bind it once without,
  // to fail as a plain listener does (and to learn the port when asked for any).
  const probe = Deno.listen({ hostname, port });
  const bound = probe.addr.port;
  probe.close();

  const serve = (p: TlsPair) => Deno.serve({ hostname, port: bound, reusePort: true, cert: p.cert, key: p.key, onListen: () => {} }, handler);
  let current = serve(pair);
  const draining = new Set<Promise<void>>();
  const retire = (server: Deno.HttpServer) => {
    const done = server.shutdown().finally(() => draining.delete(done));
    draining.add(done);
  };
  return {
    hostname: current.addr.hostname,
    port: bound,
    setPair(next) {
      const old = current;
      current = serve(next);
      retire(old);
    },
    async close() {
      retire(current);
      await Promise.all(draining);
    },
  };
}
