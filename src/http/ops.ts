// The operator's listener (`--metrics-address`): Prometheus text at /metrics, and the health routes
// beside it. Counters name the upstreams and show the traffic and access decisions, which are no
// client's business, so they stay off the public port; an entry with no second listener (Workers)
// decides for itself whether to offer them.
import type { Metrics } from "../util/metrics.ts";
import type { Health } from "./health.ts";

export function metricsResponse(metrics: Metrics): Response {
  return new Response(metrics.render(), { headers: { "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Cache-Control": "no-store" } });
}

/** The handler of the operator's listener: /metrics, /healthz and /readyz; anything else is 404. */
export function opsHandler(skiff: { metrics: Metrics; health: Health }): (request: Request) => Promise<Response> {
  const routes: Record<string, () => Response | Promise<Response>> = {
    "/metrics": () => metricsResponse(skiff.metrics),
    "/healthz": () => skiff.health.live(),
    "/readyz": () => skiff.health.ready(),
  };
  return async (request) => {
    const route = routes[new URL(request.url).pathname];
    if (!route) return new Response("not found: this listener serves /metrics, /healthz and /readyz\n", { status: 404, headers: { "Content-Type": "text/plain; charset=utf-8" } });
    if (request.method !== "GET" && request.method !== "HEAD") return new Response(null, { status: 405, headers: { Allow: "GET, HEAD" } });
    const res = await route();
    return request.method === "HEAD" ? new Response(null, res) : res;
  };
}
