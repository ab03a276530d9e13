// Durations as people write them in flags and config: `30d`, `12h`, `90m`, `45s`, or plain seconds.
const SCALE = { "": 1, s: 1, m: 60, h: 3600, d: 86400 } as const;

/** The duration in milliseconds, or null when the text is not one. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)([smhd]?)$/i.exec(text.trim());
  if (!m) return null;
  const ms = Number(m[1]) * SCALE[m[2]!.toLowerCase() as keyof typeof SCALE] * 1000;
  return Number.isSafeInteger(ms) ? ms : null;
}
