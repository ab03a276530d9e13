// The credentials a client sent in its Authorization header.

export type ClientCredentials = { kind: "basic"; username: string; password: string } | { kind: "bearer"; token: string };

/** Null when the header is absent; "invalid" when it is present but not a Basic or Bearer we can read. */
export function parseAuthorization(header: string | null | undefined): ClientCredentials | null | "invalid" {
  if (header === null || header === undefined || header.trim() === "") return null;
  const m = /^\s*(\S+)\s+(\S+)\s*$/.exec(header);
  if (!m) return "invalid";
  const scheme = m[1]!.toLowerCase();
  if (scheme === "bearer") return { kind: "bearer", token: m[2]! };
  if (scheme !== "basic") return "invalid";
  let decoded: string;
  try {
    const binary = atob(m[2]!);
    decoded = new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
  } catch {
    return "invalid";
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return "invalid";
  return { kind: "basic", username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Compares two secrets without an early exit, so timing does not reveal how much of a guess was right. */
export function secretsEqual(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  let diff = x.byteLength ^ y.byteLength;
  for (let i = 0; i < Math.max(x.byteLength, y.byteLength); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}
