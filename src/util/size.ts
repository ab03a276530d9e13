// Byte sizes as people write them in flags and vars: `8g`, `500m`, `64k`, `1048576`; `8gb` and
// `8gib` mean the same (binary units throughout).
const SCALE = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 } as const;

/** The size in bytes, or null when the text is not a size. */
export function parseSize(text: string): number | null {
  const m = /^(\d+)([kmgt]?)i?b?$/i.exec(text.trim());
  if (!m) return null;
  const bytes = Number(m[1]) * SCALE[m[2]!.toLowerCase() as keyof typeof SCALE];
  return Number.isSafeInteger(bytes) ? bytes : null;
}
