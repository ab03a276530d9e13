// An answer as plain parts, for a runtime entry that writes it without a web Response (the shortcut's).
export interface PlainAnswer {
  status: number;
  headers: Record<string, string>;
  body: Uint8Array | null;
  /** Called by the entry once the body is written out, so that its memory can be reused. */
  written?: () => void;
}
