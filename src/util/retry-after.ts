// The one reading of `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.

/** Milliseconds to wait from `now`, at least 0; null when the header is missing or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  const text = value?.trim();
  if (!text) return null;
  // Nine digits are over 30 years: longer is garbage, not a delay.
  if (/^\d{1,9}$/.test(text)) return Number(text) * 1000;
  // Every HTTP-date form names the month: without letters, Date.parse would take "-5" for a year.
  const date = /[a-z]/i.test(text) ? Date.parse(text) : NaN;
  return Number.isFinite(date) ? Math.max(0, date - now) : null;
}
