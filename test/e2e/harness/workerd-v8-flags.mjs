// Gives workerd V8 flags that Miniflare has no option for, such as `--max-old-space-size=128`: the
// heap limit a Worker has on the platform, which workerd run locally does not set. workerd reads them
// from its config (`Config.v8Flags`, a List(Text) in pointer slot 2 of the root struct, per
// workerd.capnp), and Miniflare hands it the config as one binary Cap'n Proto message on stdin.
//   node workerd-v8-flags.mjs '["--max-old-space-size=128"]' < config.bin > config-with-flags.bin
// workerd-v8-flags.sh runs this in front of workerd.
import { readFileSync, writeSync } from "node:fs";
import { fileURLToPath } from "node:url";

const WORD = 8;
const V8_FLAGS_SLOT = 2;
const LIST_POINTER = 1;
const ELEMENT_BYTE = 2;
const ELEMENT_POINTER = 6;

/**
 * The message with `flags` as the root struct's v8Flags, which must be unset: the list and its texts
 * are appended to the first segment, so no other pointer moves.
 */
export function withV8Flags(message, flags) {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const segments = view.getUint32(0, true) + 1;
  const sizes = Array.from({ length: segments }, (_, i) => view.getUint32(4 + 4 * i, true));
  const headerBytes = Math.ceil((4 + 4 * segments) / WORD) * WORD;
  const total = headerBytes + sizes.reduce((a, b) => a + b, 0) * WORD;
  if (total !== message.length) throw new Error(`a Cap'n Proto message of ${total} bytes expected, got ${message.length}`);
  const first = message.subarray(headerBytes, headerBytes + sizes[0] * WORD);
  const seg = new DataView(first.buffer, first.byteOffset, first.byteLength);

  // The root pointer (word 0) must be a plain struct pointer with the slot.
  const low = seg.getUint32(0, true);
  if ((low & 3) !== 0) throw new Error("the root pointer is not a struct pointer");
  const start = 1 + (low >> 2);
  const dataWords = seg.getUint16(4, true);
  const pointers = seg.getUint16(6, true);
  if (pointers <= V8_FLAGS_SLOT) throw new Error(`the root struct has ${pointers} pointers, not a v8Flags slot`);
  const slot = start + dataWords + V8_FLAGS_SLOT;
  if (seg.getUint32(slot * WORD, true) !== 0 || seg.getUint32(slot * WORD + 4, true) !== 0) throw new Error("the config sets v8Flags already");

  const texts = flags.map((f) => new TextEncoder().encode(`${f}\0`));
  const listAt = sizes[0];
  const textWords = texts.map((t) => Math.ceil(t.length / WORD));
  const addedWords = flags.length + textWords.reduce((a, b) => a + b, 0);
  const grown = new Uint8Array(first.length + addedWords * WORD);
  grown.set(first);
  const out = new DataView(grown.buffer);
  const pointer = (at, target, elementSize, count) => {
    out.setUint32(at * WORD, ((target - at - 1) << 2) | LIST_POINTER, true);
    out.setUint32(at * WORD + 4, (count << 3) | elementSize, true);
  };
  pointer(slot, listAt, ELEMENT_POINTER, flags.length);
  let textAt = listAt + flags.length;
  texts.forEach((text, i) => {
    pointer(listAt + i, textAt, ELEMENT_BYTE, text.length);
    grown.set(text, textAt * WORD);
    textAt += textWords[i];
  });

  const header = new Uint8Array(headerBytes);
  const headerView = new DataView(header.buffer);
  headerView.setUint32(0, segments - 1, true);
  sizes.forEach((size, i) => headerView.setUint32(4 + 4 * i, i === 0 ? size + addedWords : size, true));
  return Buffer.concat([header, grown, message.subarray(headerBytes + sizes[0] * WORD)]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const flags = JSON.parse(process.argv[2] ?? "[]");
  const patched = withV8Flags(readFileSync(0), flags);
  for (let at = 0; at < patched.length; ) at += writeSync(1, patched, at);
}
