// The token endpoint of `credentials` mode (`GET`/`POST /_skiff/token`), the registry token flow's
// realm: a user's Basic credentials (GET) or an OAuth2 password grant (POST, as containerd sends
// first) buy a short-lived bearer token. Scopes are not written into the token: what a user may
// pull is decided at each request.
import { OciError } from "../oci/errors.ts";
import type { AccessPolicy } from "./policy.ts";
import { parseAuthorization } from "./authorization.ts";
import { readAll } from "../util/streams.ts";

const MAX_FORM_BYTES = 16 * 1024;

export async function tokenEndpoint(request: Request, policy: AccessPolicy): Promise<Response> {
  if (policy.config.mode !== "credentials") throw new OciError("NAME_UNKNOWN", "this mirror issues no tokens: its access mode is not credentials", { status: 404 });
  let username: string | undefined;
  let password: string | undefined;
  if (request.method === "POST") {
    let body: Uint8Array;
    try {
      body = request.body ? await readAll(request.body, MAX_FORM_BYTES) : new Uint8Array();
    } catch {
      throw new OciError("UNSUPPORTED", "token request body too large", { status: 400 });
    }
    const form = new URLSearchParams(new TextDecoder().decode(body));
    if (form.get("grant_type") !== "password") return oauthError("unsupported_grant_type", 400);
    username = form.get("username") ?? undefined;
    password = form.get("password") ?? undefined;
  } else if (request.method === "GET") {
    const parsed = parseAuthorization(request.headers.get("authorization"));
    if (parsed && parsed !== "invalid" && parsed.kind === "basic") ({ username, password } = parsed);
  } else {
    throw new OciError("UNSUPPORTED", `${request.method} is not supported here`, { headers: { Allow: "GET, POST" } });
  }
  const user = username !== undefined && password !== undefined ? policy.user(username, password) : null;
  if (!user) {
    if (request.method === "POST") return oauthError("invalid_grant", 401);
    throw new OciError("UNAUTHORIZED", username === undefined ? "log in with a user name and password" : "invalid user name or password", {
      headers: { "WWW-Authenticate": `Basic realm="skiff"` },
    });
  }
  const { token, claims } = await policy.signer.issue(username!, policy.config.tokenTtlSeconds);
  const body = JSON.stringify({
    token,
    access_token: token,
    expires_in: claims.exp - claims.iat,
    issued_at: new Date(claims.iat * 1000).toISOString(),
  });
  return new Response(body, { status: 200, headers: { "Content-Type": "application/json", "Cache-Control": "no-store" } });
}

function oauthError(error: string, status: number): Response {
  return new Response(JSON.stringify({ error }), { status, headers: { "Content-Type": "application/json", "Cache-Control": "no-store" } });
}
