// fetch() rejects with "fetch failed" and puts the reason (ECONNREFUSED, a TLS error) in `cause`.

/** An error's message, and its cause's when it has one, for a one-line report. */
export function errorMessage(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return err.cause instanceof Error ? `${err.message}: ${err.cause.message}` : err.message;
}
