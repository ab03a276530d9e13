// A Docker-registry token server for tests (node:http on 127.0.0.1). It checks HTTP Basic
// credentials and issues ES256 JWTs carrying an `x5c` header with a self-signed certificate; the same
// certificate is the registry's `rootcertbundle`, so Distribution 2.8 accepts the tokens.
// By default a valid user gets every scope it asks for; an optional ACL limits users to named
// repositories the way Distribution's token servers do: a scope for any other repository comes back
// with no actions, so the registry answers 401 insufficient_scope.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createPrivateKey, randomUUID, sign, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./workdir.ts";
import { runOk } from "./processes.ts";

export interface TokenIssuerOptions {
  /** username → password */
  users: Record<string, string>;
  /** The registry's `auth.token.service` (becomes the `aud` claim). */
  service: string;
  /** The registry's `auth.token.issuer` (becomes the `iss` claim). */
  issuer: string;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
  /**
   * username → repository names the user may access (exact names, or `prefix/*` for every name
   * below `prefix/`). Users not listed get every scope they ask for; a listed user's `repository`
   * scopes for other names are granted with no actions.
   */
  acl?: Record<string, string[]>;
}

export interface AccessEntry {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  method: string;
  url: string;
  user: string | undefined;
  granted: boolean;
  scopes: string[];
  /** The access the issued token carries (after the ACL), when one was issued. */
  access?: AccessEntry[];
  /** The issued token, when one was issued (lets a test check it never shows up elsewhere). */
  token?: string;
}

const b64url = (buf: Buffer | string) => Buffer.from(buf).toString("base64url");

/** Parse a scope string such as `repository:library/foo:pull,push` (the name may contain ':'). */
export function parseScope(scope: string): AccessEntry | undefined {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last <= first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(",")
      .filter((a) => a !== ""),
  };
}

export class TokenIssuer {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly requests: TokenRequestRecord[] = [];
  private readonly options: TokenIssuerOptions;
  private readonly key: KeyObject;
  private readonly certDer: Buffer;
  private server: Server | undefined;
  private port = 0;

  private constructor(dir: string, options: TokenIssuerOptions, key: KeyObject, certDer: Buffer) {
    this.dir = dir;
    this.certPath = join(dir, "cert.pem");
    this.keyPath = join(dir, "key.pem");
    this.options = options;
    this.key = key;
    this.certDer = certDer;
  }

  /** Make a P-256 key and self-signed certificate with openssl, then listen on a free port. */
  static async start(options: TokenIssuerOptions): Promise<TokenIssuer> {
    const dir = tempDir("token-issuer");
    const keyPath = join(dir, "key.pem");
    const certPath = join(dir, "cert.pem");
    await runOk("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyPath]);
    await runOk("openssl", [
      "req", "-new", "-x509", "-key", keyPath, "-out", certPath, "-days", "2",
      "-subj", "/CN=skiff-e2e-token-issuer", "-sha256",
    ]);
    const pem = readFileSync(certPath, "utf8");
    const body = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem)?.[1];
    if (body === undefined) throw new Error("openssl wrote no certificate");
    const certDer = Buffer.from(body.replace(/\s+/g, ""), "base64");
    const key = createPrivateKey(readFileSync(keyPath));
    const issuer = new TokenIssuer(dir, options, key, certDer);
    await issuer.listen();
    return issuer;
  }

  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.hostPort}`;
  }

  /** The realm URL to configure in the registry. */
  get realm(): string {
    return `${this.url}/token`;
  }

  /** Number of token requests received (any outcome). */
  get requestCount(): number {
    return this.requests.length;
  }

  private listen(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const addr = server.address();
        this.port = typeof addr === "object" && addr !== null ? addr.port : 0;
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Sign a token for `subject` with `access` (exposed so tests can craft tokens directly). */
  issueToken(subject: string, access: AccessEntry[]): { token: string; expiresIn: number; issuedAt: string } {
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = this.options.expiresIn ?? 300;
    const header = { typ: "JWT", alg: "ES256", x5c: [this.certDer.toString("base64")] };
    const claims = {
      iss: this.options.issuer,
      sub: subject,
      aud: this.options.service,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign("sha256", Buffer.from(signingInput), { key: this.key, dsaEncoding: "ieee-p1363" });
    return { token: `${signingInput}.${b64url(signature)}`, expiresIn, issuedAt: new Date(now * 1000).toISOString() };
  }

  /** Whether the ACL lets `user` have `entry` (always, for users the ACL does not list). */
  allows(user: string, entry: AccessEntry): boolean {
    const allowed = this.options.acl?.[user];
    if (allowed === undefined) return true;
    if (entry.type !== "repository") return false;
    return allowed.some((n) => (n.endsWith("/*") ? entry.name.startsWith(n.slice(0, -1)) : entry.name === n));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      total += c.length;
      if (total > 1 << 20) break;
      chunks.push(c);
    }
    const record: TokenRequestRecord = { method: req.method ?? "", url: req.url ?? "", user: undefined, granted: false, scopes: [] };
    this.requests.push(record);

    if (url.pathname !== "/token" || (req.method !== "GET" && req.method !== "POST")) {
      res.writeHead(404, { "content-type": "application/json" }).end('{"error":"not found"}');
      return;
    }
    let user: string | undefined;
    let password: string | undefined;
    let scopes = url.searchParams.getAll("scope");
    const service = url.searchParams.get("service") ?? undefined;
    const basic = /^Basic\s+(.+)$/i.exec(req.headers.authorization ?? "");
    if (basic !== null) {
      const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
      const i = decoded.indexOf(":");
      if (i >= 0) {
        user = decoded.slice(0, i);
        password = decoded.slice(i + 1);
      }
    }
    if (req.method === "POST") {
      // OAuth2 password grant, as some clients use.
      const form = new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
      if (form.get("grant_type") === "password") {
        user = form.get("username") ?? undefined;
        password = form.get("password") ?? undefined;
      }
      const s = form.get("scope");
      if (s !== null) scopes = [...scopes, ...s.split(" ").filter((x) => x !== "")];
    }
    record.user = user;
    record.scopes = scopes;
    if (service !== undefined && service !== this.options.service) {
      res.writeHead(400, { "content-type": "application/json" }).end('{"errors":[{"code":"DENIED","message":"unknown service"}]}');
      return;
    }
    if (user === undefined || password === undefined || this.options.users[user] !== password) {
      res
        .writeHead(401, {
          "content-type": "application/json",
          "www-authenticate": `Basic realm="${this.options.issuer}"`,
        })
        .end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      return;
    }
    const access = scopes
      .map(parseScope)
      .filter((a): a is AccessEntry => a !== undefined)
      .map((a) => (this.allows(user!, a) ? a : { ...a, actions: [] }));
    const { token, expiresIn, issuedAt } = this.issueToken(user, access);
    record.granted = true;
    record.access = access;
    record.token = token;
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ token, access_token: token, expires_in: expiresIn, issued_at: issuedAt }));
  }
}
