// containerd's filter expressions, as List receives them: `labels."containerd.io/snapshot.ref"==X,parent=="k"`.
// A filter is terms joined by `,`, all of which must hold; List matches if any of its filters does.
// A term is a field path (`name`, `parent`, `kind`, `labels.KEY`, a component quoted when it has
// dots) alone (present and non-empty), or followed by `==`, `!=` or `~=` (a regular expression) and a
// value, bare or quoted.

export type FieldOf = (path: string[]) => string | undefined;
type Term = { path: string[]; op?: "==" | "!=" | "~="; value?: string; pattern?: RegExp };

export class FilterError extends Error {}

/** A predicate for the filters; no filters match everything. */
export function parseFilters(filters: readonly string[]): (field: FieldOf) => boolean {
  const parsed = filters.filter((f) => f.trim() !== "").map(parseFilter);
  if (parsed.length === 0) return () => true;
  return (field) => parsed.some((terms) => terms.every((t) => holds(t, field)));
}

function holds(t: Term, field: FieldOf): boolean {
  const actual = field(t.path);
  if (t.op === undefined) return actual !== undefined && actual !== "";
  if (t.op === "==") return actual === t.value;
  if (t.op === "!=") return actual !== t.value;
  return actual !== undefined && t.pattern!.test(actual);
}

function parseFilter(text: string): Term[] {
  return splitOutsideQuotes(text, ",").map((term) => {
    const at = operatorAt(term);
    const path = parsePath(at < 0 ? term : term.slice(0, at));
    if (at < 0) return { path };
    const op = term.slice(at, at + 2) as Term["op"];
    const value = unquote(term.slice(at + 2).trim());
    if (op !== "~=") return { path, op, value };
    try {
      return { path, op, value, pattern: new RegExp(value) };
    } catch {
      throw new FilterError(`bad regular expression in filter ${JSON.stringify(text)}`);
    }
  });
}

function splitOutsideQuotes(text: string, sep: string): string[] {
  const parts: string[] = [];
  let quote: string | null = null;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "`") quote = c;
    else if (c === sep) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  if (quote) throw new FilterError(`unterminated quote in filter ${JSON.stringify(text)}`);
  parts.push(text.slice(start));
  return parts.map((p) => p.trim());
}

/** Index of the first `==`, `!=` or `~=` outside quotes, or -1. */
function operatorAt(term: string): number {
  let quote: string | null = null;
  for (let i = 0; i < term.length - 1; i++) {
    const c = term[i]!;
    if (quote) {
      if (c === "\\") i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "`") quote = c;
    else if ((c === "=" || c === "!" || c === "~") && term[i + 1] === "=") return i;
  }
  return -1;
}

function parsePath(text: string): string[] {
  const path = splitOutsideQuotes(text.trim(), ".").map(unquote);
  if (path.some((p) => p === "")) throw new FilterError(`bad field path ${JSON.stringify(text)}`);
  return path;
}

function unquote(text: string): string {
  const q = text[0];
  if ((q === '"' || q === "`") && text.length >= 2 && text.endsWith(q)) {
    const inner = text.slice(1, -1);
    return q === "`" ? inner : inner.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c === "t" ? "\t" : c));
  }
  return text;
}
