// What the shortcut tests compare between the app's answer and the shortcut's: headers by lower-case
// name, and the counters a request moved.
import type { PlainAnswer } from "../../src/http/range-shortcut.ts";

export const lower = (headers: PlainAnswer["headers"]) => Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));

/** Every counter's value, by series, from the Prometheus text. */
export function counters(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) if (line && !line.startsWith("#")) values.set(line.slice(0, line.lastIndexOf(" ")), Number(line.slice(line.lastIndexOf(" ") + 1)));
  return values;
}

export function delta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [series, value] of after) if (value !== (before.get(series) ?? 0)) out[series] = value - (before.get(series) ?? 0);
  return out;
}
