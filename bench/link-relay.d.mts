// Types of bench/link-relay.mjs, for the TypeScript tests and benchmarks that start it in-process.
export interface LinkRelayOptions {
  target: { host: string; port: number };
  /** One-way delay per direction, in ms (RTT grows by twice this). */
  latencyMs?: number;
  /** Cap per direction in bits per second, shared by all connections; 0 or Infinity: none. */
  rateBitsPerSecond?: number;
  /** Where to listen: default 127.0.0.1, any free port. */
  host?: string;
  port?: number;
}
export interface LinkRelay {
  port: number;
  /** Drops every open connection (the relay keeps listening). */
  cut(): void;
  close(): Promise<void>;
}
export function startLinkRelay(options: LinkRelayOptions): Promise<LinkRelay>;
export function parseLatency(text: string): number;
export function parseRate(text: string): number;
