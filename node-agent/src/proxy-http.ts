// One HTTP client for everything the agent asks the proxy: keep-alive connections, the credentials
// on every request, and when asked an extra CA bundle (a proxy behind TLS with a private CA) or an
// HTTP proxy (a Dragonfly dfdaemon peer, say) that every request goes through. Those two need
// undici's own agents; without them node:http does (node-http-fetch.ts), and the agent starts
// about 0.1 s sooner for not loading the undici package and 60 ms sooner for not using Node's
// global fetch (a mount is on a container's critical path).
import { nodeHttpClient } from "./node-http-fetch.ts";
import type { FetchLike } from "./range-request.ts";

export interface ProxyHttpOptions {
  /** `Bearer …` or `Basic …`, sent with every request. */
  authorization?: string;
  /** PEM certificates trusted for an https proxy, in addition to none other. */
  ca?: string;
  /**
   * An HTTP proxy for every request. A plain-http skiff URL is asked in absolute form, so the
   * proxy sees (and can cache or share) each chunk request; an https one is tunnelled (CONNECT).
   */
  httpProxy?: string;
}

export async function proxyHttp(o: ProxyHttpOptions): Promise<{ fetch: FetchLike; close(): Promise<void> }> {
  const withCredentials = (init: Parameters<FetchLike>[1]) => (o.authorization ? { ...init, headers: { ...init.headers, authorization: o.authorization } } : init);
  if (!o.httpProxy && !o.ca) {
    const client = nodeHttpClient();
    return { fetch: (url, init) => client.fetch(url, withCredentials(init)), close: async () => client.close() };
  }
  const { Agent, ProxyAgent, fetch: undiciFetch } = await import("undici");
  const pool = { keepAliveTimeout: 30_000, connections: 8 };
  const agent = o.httpProxy
    ? new ProxyAgent({ uri: o.httpProxy, proxyTunnel: false, ...pool, ...(o.ca ? { requestTls: { ca: o.ca } } : {}) })
    : new Agent({ ...pool, connect: { ca: o.ca } });
  const fetchVia: FetchLike = (url, init) => undiciFetch(url, { ...withCredentials(init), dispatcher: agent }) as unknown as Promise<Response>;
  // Closing ends requests still in flight (background prefetch) rather than waiting them out.
  return { fetch: fetchVia, close: () => agent.destroy() };
}

export function basicAuthorization(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
