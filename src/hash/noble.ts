// Portable pure-JS hasher: the fallback for runtimes without a native incremental hash.
import { sha256, sha512 } from "@noble/hashes/sha2.js";
import { toHex, type Hasher, type HasherFactory } from "./hasher.ts";

export const nobleHasher: HasherFactory = (algorithm): Hasher => {
  const h = (algorithm === "sha256" ? sha256 : sha512).create();
  return {
    update: (data) => void h.update(data),
    hex: () => toHex(h.digest()),
  };
};
