// A layer's bytes for its conversion on the proxy, read in one pass on a cold edge. A layer in the
// verified cache is read from the store. One that is not is converted while it downloads: the
// conversion reads the live stream of the blob fetch it starts, which the blob cache hashes and
// stores as it passes, holding the last bytes back until the digest matched and erroring the stream
// when it did not. Nothing derived from those bytes may be published before `verified()`: the blob
// matched its digest and is stored, the state a download before the conversion would have left.
// A conversion that stops early (a bad tar, a paused step) lets the download run to its end without
// it, and `settle()` waits for that end, so the blob store ends as it would have with two passes and
// a bad upstream blob is reported as such, not as whatever the converter made of its bytes. A fetch
// already running for someone else (a client's pull) has no live stream to spare: then the
// conversion waits for the blob to be stored and reads it from there, as it always did.
import type { BlobCache, BlobFetch } from "../cache/blobs.ts";
import type { Digest } from "../oci/reference.ts";

export class LayerFeed {
  readonly #blobs: BlobCache;
  readonly #name: string;
  readonly #digest: Digest;
  readonly #stored: () => Promise<ReadableStream<Uint8Array>>;
  /** The fetch whose live stream this feed reads, once opened on a cold edge. */
  #fetch: BlobFetch | null = null;
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;

  /** `stored` reads the blob through the verified cache (pulling it in first when missing). */
  constructor(blobs: BlobCache, name: string, digest: Digest, stored: () => Promise<ReadableStream<Uint8Array>>) {
    this.#blobs = blobs;
    this.#name = name;
    this.#digest = digest;
    this.#stored = stored;
  }

  /** The layer's bytes: live from the upstream when this call starts its download, else from the store. */
  async open(): Promise<ReadableStream<Uint8Array>> {
    if (this.#fetch) throw new Error(`layer ${this.#digest.value} is already being read`);
    if (await this.#blobs.cached(this.#name, this.#digest)) return this.#stored();
    // Live unless the cache fetches this blob in steps (Workers): then from the store once it is whole.
    const fetch = await this.#blobs.fetch(this.#name, this.#digest, "if-one-pass");
    if (!fetch.live) return this.#stored();
    this.#fetch = fetch;
    const reader = (this.#reader = fetch.live.getReader());
    // A view whose cancel stops only this reader: the download goes on to its end regardless.
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel: (reason) => reader.cancel(reason),
    });
  }

  /** Resolves once the bytes read so far are known to be the verified, stored blob; rejects when they never will be. */
  async verified(): Promise<void> {
    if (this.#fetch) await this.#fetch.done;
  }

  /**
   * Called when the conversion has ended, either way: stops reading, waits for the download to end,
   * and returns its failure (a digest mismatch, the upstream, the store), or null when the blob was stored.
   */
  async settle(): Promise<unknown> {
    if (!this.#fetch) return null;
    await this.#reader?.cancel().catch(() => {});
    try {
      await this.#fetch.done;
      return null;
    } catch (err) {
      return err;
    }
  }
}
