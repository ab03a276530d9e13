// One HTTP client for everything the agent asks the proxy: a keep-alive undici pool, an optional
// CA bundle for a proxy behind TLS with a private CA, the credentials on every request, and
// optionally an HTTP proxy (a Dragonfly dfdaemon peer, say) that every request goes through.
import { Agent, ProxyAgent, fetch as undiciFetch, type Dispatcher } from "undici";
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

export function proxyHttp(o: ProxyHttpOptions): { fetch: FetchLike; close(): Promise<void> } {
  const pool = { keepAliveTimeout: 30_000, connections: 8 };
  const agent: Dispatcher = o.httpProxy
    ? new ProxyAgent({ uri: o.httpProxy, proxyTunnel: false, ...pool, ...(o.ca ? { requestTls: { ca: o.ca } } : {}) })
    : new Agent({ ...pool, ...(o.ca ? { connect: { ca: o.ca } } : {}) });
  const fetch: FetchLike = (url, init) =>
    undiciFetch(url, { ...init, headers: o.authorization ? { ...init.headers, authorization: o.authorization } : init.headers, dispatcher: agent }) as unknown as Promise<Response>;
  // Closing ends requests still in flight (background prefetch) rather than waiting them out.
  return { fetch, close: () => agent.destroy() };
}

export function basicAuthorization(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
