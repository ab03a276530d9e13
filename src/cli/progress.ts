// A one-line progress display on a terminal (stderr); silent when stderr is not a TTY.

export class Progress {
  readonly #enabled = Boolean(process.stderr.isTTY);
  #last = 0;
  #lineLength = 0;

  /** Redraws at most ten times a second. */
  update(text: string, force = false): void {
    if (!this.#enabled) return;
    const now = Date.now();
    if (!force && now - this.#last < 100) return;
    this.#last = now;
    const width = process.stderr.columns || 80;
    const line = text.length >= width ? text.slice(0, width - 1) : text;
    process.stderr.write(`\r${line}${" ".repeat(Math.max(0, this.#lineLength - line.length))}`);
    this.#lineLength = line.length;
  }

  done(): void {
    if (this.#enabled && this.#lineLength > 0) process.stderr.write(`\r${" ".repeat(this.#lineLength)}\r`);
    this.#lineLength = 0;
  }
}

export function bar(fraction: number, width = 24): string {
  const f = Math.max(0, Math.min(1, fraction));
  const full = Math.round(f * width);
  return `[${"#".repeat(full)}${".".repeat(width - full)}] ${(f * 100).toFixed(0).padStart(3)}%`;
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
