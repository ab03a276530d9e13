import { describe, expect, it } from "vitest";
import { fromHex, hashBytes, toHex, type HashAlgorithm, type HasherFactory } from "../../src/hash/hasher.ts";
import { nobleHasher } from "../../src/hash/noble.ts";
import { nodeHasher } from "../../src/hash/node.ts";
import { bytesOf } from "./fakes.ts";

const enc = (s: string) => new TextEncoder().encode(s);

// FIPS 180-2 test vectors.
const VECTORS: { input: string; sha256: string; sha512: string }[] = [
  {
    input: "abc",
    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    sha512:
      "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
  },
  {
    input: "",
    sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    sha512:
      "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
  },
];

const FACTORIES: [string, HasherFactory][] = [
  ["node", nodeHasher],
  ["noble", nobleHasher],
];
const ALGORITHMS: HashAlgorithm[] = ["sha256", "sha512"];

describe.each(FACTORIES)("%s hasher", (_name, factory) => {
  it("matches the FIPS vectors for sha256 and sha512", () => {
    for (const v of VECTORS) {
      for (const algorithm of ALGORITHMS) {
        const h = factory(algorithm);
        h.update(enc(v.input));
        expect(h.hex(), `${algorithm}(${JSON.stringify(v.input)})`).toBe(v[algorithm]);
      }
    }
  });

  it("gives the same digest for incremental updates (odd splits, empty updates) as for one shot", () => {
    const data = bytesOf(100_003, 7);
    for (const algorithm of ALGORITHMS) {
      const h = factory(algorithm);
      const cuts = [0, 1, 1, 63, 64, 65, 1000, 4096, 50_000, 99_999, data.byteLength];
      for (let i = 1; i < cuts.length; i++) h.update(data.subarray(cuts[i - 1]!, cuts[i]!));
      expect(h.hex()).toBe(hashBytes(factory, algorithm, data));
    }
  });

  it("hashes a million 'a' fed in 1000-byte pieces to the known digest", () => {
    const piece = new Uint8Array(1000).fill(0x61);
    const h = factory("sha256");
    for (let i = 0; i < 1000; i++) h.update(piece);
    expect(h.hex()).toBe("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  });
});

describe("node and noble agree", () => {
  it("on random inputs of many lengths", () => {
    for (const length of [1, 55, 56, 64, 111, 112, 128, 1023, 65_537]) {
      const data = bytesOf(length, length);
      for (const algorithm of ALGORITHMS) {
        expect(hashBytes(nobleHasher, algorithm, data), `${algorithm} of ${length} bytes`).toBe(hashBytes(nodeHasher, algorithm, data));
      }
    }
  });
});

describe("hashBytes and toHex", () => {
  it("hashBytes hashes the whole buffer with the factory's algorithm", () => {
    expect(hashBytes(nodeHasher, "sha256", enc("abc"))).toBe(VECTORS[0]!.sha256);
    expect(hashBytes(nobleHasher, "sha512", enc("abc"))).toBe(VECTORS[0]!.sha512);
  });

  it("takes the factory's one-shot digest when it has one, hashing only the view's bytes", () => {
    expect(nodeHasher.digestHex, "Node's one-shot crypto.hash").toBeTypeOf("function");
    const whole = bytesOf(4096, 3);
    const view = whole.subarray(1000, 3000);
    for (const algorithm of ALGORITHMS) {
      const h = nodeHasher(algorithm);
      h.update(view.slice());
      expect(nodeHasher.digestHex!(algorithm, view), algorithm).toBe(h.hex());
      expect(nodeHasher.digestHex!(algorithm, enc("abc")), algorithm).toBe(VECTORS[0]![algorithm]);
    }
    let calls = 0;
    const counting: HasherFactory = Object.assign((algorithm: HashAlgorithm) => nobleHasher(algorithm), {
      digestHex: (algorithm: HashAlgorithm, data: Uint8Array) => (calls++, hashBytes(nobleHasher, algorithm, data)),
    });
    expect(hashBytes(counting, "sha256", enc("abc"))).toBe(VECTORS[0]!.sha256);
    expect(calls).toBe(1);
  });

  it("toHex writes two lowercase digits per byte", () => {
    expect(toHex(new Uint8Array([0, 1, 0x0f, 0x10, 0xab, 0xff]))).toBe("00010f10abff");
    expect(toHex(new Uint8Array(0))).toBe("");
  });

  it("fromHex reads back what toHex writes, and refuses anything but lowercase hex pairs", () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(fromHex(toHex(all))).toEqual(all);
    expect(fromHex("")).toEqual(new Uint8Array(0));
    for (const bad of ["a", "abc", "AB", "0g", "g0", " 0", "0/", ":0", "`0", "0\u0100", "é0"]) expect(() => fromHex(bad), JSON.stringify(bad)).toThrow("invalid hex");
  });
});
