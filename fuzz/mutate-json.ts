// Structure-aware mutation for JSON inputs. Byte mutations mostly break the syntax, so the JSON
// parser's refusal is all they reach; these change the parsed document instead: a value replaced by a
// boundary value or by another value of the corpus, a member removed, an odd member added, a value
// wrapped, so that the code behind the parser sees well-formed documents it was not written for.
// One mutant in four is still made byte by byte, for the parser itself.
import { mutate, type Prng } from "./mutate.ts";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Container = Json[] | { [key: string]: Json };

const BOUNDARY_VALUES: Json[] = [
  null, true, false, 0, -1, -0, 0.5, 1e308, 2 ** 53, -(2 ** 31), "", " ", "*", "a".repeat(300), "\u0000", "é",
  "http://", "https://127.0.0.1:0", "ftp://x", "//x", "../x", "docker.io", "P", [], {}, [null], { "": "" },
];
const ODD_KEYS = ["__proto__", "constructor", "prototype", "", " ", "toString", "hasOwnProperty", "0"];
const MAX_DEPTH = 32;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A mutant of one of `seeds` (JSON documents), picked and changed by `prng`. */
export function mutateJson(seeds: Uint8Array[], prng: Prng, maxLength: number): Uint8Array {
  if (prng.below(4) === 0) return mutate(seeds, prng, maxLength);
  const docs = seeds.map((s) => JSON.parse(decoder.decode(s)) as Json);
  const keys = [...new Set(docs.flatMap((d) => slots(d).flatMap(([c]) => (Array.isArray(c) ? [] : Object.keys(c)))))];
  const root: { doc: Json } = { doc: structuredClone(docs[prng.below(docs.length)]!) };
  const rounds = 1 + prng.below(4);
  for (let r = 0; r < rounds; r++) {
    const all = slots(root as unknown as Json);
    if (all.length === 0) break; // the whole document was removed: it is sent as null
    const [container, key] = all[prng.below(all.length)]!;
    apply(container, key, docs, keys, prng);
  }
  const out = encoder.encode(JSON.stringify(root.doc) ?? "null");
  return out.length > maxLength ? mutate(seeds, prng, maxLength) : out;
}

function apply(container: Container, key: string | number, docs: Json[], keys: string[], prng: Prng): void {
  const set = (value: Json) => ((container as Record<string, Json>)[key] = value);
  const current = (container as Record<string, Json>)[key]!;
  switch (prng.below(6)) {
    case 0: // a boundary value
      return void set(structuredClone(BOUNDARY_VALUES[prng.below(BOUNDARY_VALUES.length)]!));
    case 1: {
      // a value from elsewhere in the corpus: right in shape, wrong in place
      const donors = slots(docs[prng.below(docs.length)]!);
      const [c, k] = donors[prng.below(donors.length)]!;
      return void set(structuredClone((c as Record<string, Json>)[k]!));
    }
    case 2: // remove the member
      if (Array.isArray(container)) container.splice(Number(key), 1);
      else delete container[key];
      return;
    case 3: {
      // add a member: an odd name, or a name used elsewhere, beside this one
      if (current === null || typeof current !== "object") return void set({ [ODD_KEYS[prng.below(ODD_KEYS.length)]!]: current });
      const name = prng.below(2) === 0 ? ODD_KEYS[prng.below(ODD_KEYS.length)]! : keys[prng.below(keys.length)]!;
      const value = structuredClone(BOUNDARY_VALUES[prng.below(BOUNDARY_VALUES.length)]!);
      if (Array.isArray(current)) current.push(value);
      else Object.defineProperty(current, name, { value, enumerable: true, writable: true, configurable: true });
      return;
    }
    case 4: // wrap it
      return void set(prng.below(2) === 0 ? [current] : { [keys[prng.below(keys.length)]!]: current });
    default: // repeat it, in an array
      return void set(Array.from({ length: 2 + prng.below(100) }, () => structuredClone(current)));
  }
}

/** Every (container, key) holding a value in the document, depth first, bounded. */
function slots(doc: Json): [Container, string | number][] {
  const out: [Container, string | number][] = [];
  const visit = (value: Json, depth: number) => {
    if (value === null || typeof value !== "object" || depth > MAX_DEPTH) return;
    for (const key of Array.isArray(value) ? value.keys() : Object.keys(value)) {
      out.push([value, key]);
      visit((value as Record<string, Json>)[key]!, depth + 1);
    }
  };
  visit(doc, 0);
  return out;
}
