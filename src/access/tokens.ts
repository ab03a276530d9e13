// Bearer tokens skiff issues to its own clients in `credentials` mode: `<payload>.<mac>`, both
// base64url, the payload `{"sub","iat","exp"}` and the mac HMAC-SHA256 over the payload with the
// configured secret. They only say who the client is and until when; what it may pull is decided at
// each request from the config, so removing a user takes effect at once.

export interface TokenClaims {
  sub: string;
  iat: number;
  exp: number;
}

export class TokenSigner {
  readonly #key: Promise<CryptoKey>;
  readonly #now: () => number;

  constructor(secret: string | undefined, now: () => number = Date.now) {
    const raw = secret === undefined ? crypto.getRandomValues(new Uint8Array(32)) : new TextEncoder().encode(secret);
    this.#key = crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"]);
    this.#now = now;
  }

  async issue(subject: string, ttlSeconds: number): Promise<{ token: string; claims: TokenClaims }> {
    const iat = Math.floor(this.#now() / 1000);
    const claims = { sub: subject, iat, exp: iat + ttlSeconds };
    const payload = base64url(new TextEncoder().encode(JSON.stringify(claims)));
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", await this.#key, new TextEncoder().encode(payload)));
    return { token: `${payload}.${base64url(mac)}`, claims };
  }

  /** The claims of a token this signer made and that has not expired; null for anything else. */
  async verify(token: string): Promise<TokenClaims | null> {
    const m = /^([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{43})$/.exec(token);
    if (!m) return null;
    const mac = fromBase64url(m[2]!);
    // crypto.subtle.verify compares in constant time.
    if (!mac || !(await crypto.subtle.verify("HMAC", await this.#key, mac, new TextEncoder().encode(m[1]!)))) return null;
    let claims: Partial<TokenClaims>;
    try {
      claims = JSON.parse(new TextDecoder().decode(fromBase64url(m[1]!) ?? new Uint8Array())) as Partial<TokenClaims>;
    } catch {
      return null;
    }
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number" || typeof claims.iat !== "number") return null;
    if (claims.exp * 1000 <= this.#now()) return null;
    return claims as TokenClaims;
  }
}

function base64url(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array<ArrayBuffer> | null {
  try {
    const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  } catch {
    return null;
  }
}
