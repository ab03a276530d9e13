// WWW-Authenticate parsing (RFC 9110 §11.6.1), lenient enough for real registries.

/** `scheme` is lowercased; parameter names are lowercased; a token68 is stored under "". */
export type Challenge = { scheme: string; params: Record<string, string> };

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// token68 followed by optional whitespace and then a comma or the end of the header.
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))/y;

/**
 * Parses every challenge in a WWW-Authenticate value. Commas separate both challenges and
 * parameters, so after a comma a `token =` continues the current challenge and anything else
 * starts a new one. Never throws: unparseable stretches are skipped up to the next comma.
 * If a parameter repeats within a challenge, the first occurrence wins.
 */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  let pos = 0;

  const skipWhitespace = (): void => {
    while (header[pos] === " " || header[pos] === "\t") pos++;
  };
  const readToken = (): string => {
    const start = pos;
    while (pos < header.length && TCHAR.test(header[pos]!)) pos++;
    return header.slice(start, pos);
  };
  // Skips to the next comma outside a quoted string (or to the end) to recover from garbage.
  const skipToComma = (): void => {
    while (pos < header.length && header[pos] !== ",") {
      if (header[pos] === '"') readQuoted();
      else pos++;
    }
  };
  // Reads a quoted-string starting at the opening quote; an unterminated one runs to the end.
  const readQuoted = (): string => {
    let value = "";
    pos++;
    while (pos < header.length) {
      const c = header[pos++]!;
      if (c === '"') return value;
      if (c === "\\" && pos < header.length) value += header[pos++];
      else value += c;
    }
    return value;
  };
  // Unquoted values should be tokens; accept anything up to a comma or space, as registries
  // sometimes send bare URLs.
  const readBareValue = (): string => {
    const start = pos;
    while (pos < header.length && !/[,\s]/.test(header[pos]!)) pos++;
    return header.slice(start, pos);
  };

  while (pos < header.length) {
    while (header[pos] === "," || header[pos] === " " || header[pos] === "\t") pos++;
    if (pos >= header.length) break;

    const scheme = readToken();
    if (scheme === "") {
      skipToComma(); // pos is on a character that is neither "," nor the end, so this advances
      continue;
    }
    const params = new Map<string, string>();
    challenges.push({ scheme: scheme.toLowerCase(), params: {} });
    const challenge = challenges[challenges.length - 1]!;

    skipWhitespace();
    TOKEN68.lastIndex = pos;
    const token68 = TOKEN68.exec(header);
    if (token68 !== null) {
      params.set("", token68[0]);
      pos += token68[0].length;
    } else {
      // auth-params until the end or until a comma is followed by something that is not one.
      let first = true;
      for (;;) {
        skipWhitespace();
        if (pos >= header.length) break;
        if (!first) {
          if (header[pos] !== ",") {
            skipToComma();
            continue;
          }
          while (header[pos] === "," || header[pos] === " " || header[pos] === "\t") pos++;
          if (pos >= header.length) break;
        }
        const itemStart = pos;
        const name = readToken();
        skipWhitespace();
        if (name === "" || header[pos] !== "=") {
          if (!first) {
            pos = itemStart; // not a parameter: the next challenge starts here
            break;
          }
          first = false;
          skipToComma();
          continue;
        }
        first = false;
        pos++;
        skipWhitespace();
        const value = header[pos] === '"' ? readQuoted() : readBareValue();
        const key = name.toLowerCase();
        if (!params.has(key)) params.set(key, value);
      }
    }
    challenge.params = Object.fromEntries(params);
  }
  return challenges;
}

/** The first Bearer challenge that names a realm, as a token client needs it. */
export function bearerChallenge(
  header: string | null,
): { realm: string; service?: string; scope?: string } | null {
  if (header === null) return null;
  for (const { scheme, params } of parseChallenges(header)) {
    const realm = params["realm"];
    if (scheme !== "bearer" || realm === undefined || realm === "") continue;
    const result: { realm: string; service?: string; scope?: string } = { realm };
    if (params["service"] !== undefined) result.service = params["service"];
    if (params["scope"] !== undefined) result.scope = params["scope"];
    return result;
  }
  return null;
}
