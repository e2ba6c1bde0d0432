// A prompt's sequence hashes as routing carries them: (lo, hi) u32 words,
// the form the compact index probes with, straight from the WebAssembly
// hasher. Bigints are made only when a reader asks for them (active-sequence
// load, predictions, lower tiers, approximate mode): 128 bigints and their
// array cost about 1 µs, as much as hashing a third of the prompt.

/** Sequence hashes as little-endian (lo, hi) u32 pairs, with bigints on demand. */
export class SequenceHashes {
  private big: readonly bigint[] | undefined;

  /** `words` is owned by this object from now on (2 words per block). */
  constructor(readonly words: Uint32Array) {}

  static fromBigints(hashes: readonly bigint[]): SequenceHashes {
    const s = new SequenceHashes(new Uint32Array(BigUint64Array.from(hashes).buffer));
    s.big = hashes;
    return s;
  }

  /** Blocks. */
  get length(): number {
    return this.words.length >>> 1;
  }

  /** The hashes as u64 bigints (made once, on first use). */
  get bigints(): readonly bigint[] {
    if (this.big === undefined) {
      const w = this.words;
      // A u64 view needs 8-byte alignment; words from the hasher own their buffer from offset 0.
      const aligned = w.byteOffset % 8 === 0 ? w : w.slice();
      this.big = Array.from(new BigUint64Array(aligned.buffer, aligned.byteOffset, this.length));
    }
    return this.big;
  }
}

/**
 * A prompt hashed where it was decoded (FindBestWorker over gRPC): its token
 * count and the sequence hashes for the block size and the seed's inputs
 * (LoRA name, cache namespace) it was hashed with. The tokens themselves are
 * not kept; routing reads only their count and these hashes.
 */
export class HashedPrompt {
  constructor(
    /** Tokens in the prompt (so it stands where a token array's length is read). */
    readonly length: number,
    readonly blockSize: number,
    readonly loraName: string,
    readonly cacheNamespace: string,
    readonly sequence: SequenceHashes,
  ) {}

  /** Whether these hashes are the ones a router with this block size computes for (lora, namespace). */
  fits(blockSize: number, loraName: string, cacheNamespace: string): boolean {
    return this.blockSize === blockSize && this.loraName === loraName && this.cacheNamespace === cacheNamespace;
  }
}
