// One HTTP client for everything the agent asks the proxy: a keep-alive undici pool, an optional
// CA bundle for a proxy behind TLS with a private CA, and the credentials on every request.
import { Agent, fetch as undiciFetch } from "undici";
import type { FetchLike } from "./range-request.ts";

export interface ProxyHttpOptions {
  /** `Bearer …` or `Basic …`, sent with every request. */
  authorization?: string;
  /** PEM certificates trusted for an https proxy, in addition to none other. */
  ca?: string;
}

export function proxyHttp(o: ProxyHttpOptions): { fetch: FetchLike; close(): Promise<void> } {
  const agent = new Agent({ keepAliveTimeout: 30_000, connections: 8, ...(o.ca ? { connect: { ca: o.ca } } : {}) });
  const fetch: FetchLike = (url, init) =>
    undiciFetch(url, { ...init, headers: o.authorization ? { ...init.headers, authorization: o.authorization } : init.headers, dispatcher: agent }) as unknown as Promise<Response>;
  return { fetch, close: () => agent.close() };
}

export function basicAuthorization(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
}
