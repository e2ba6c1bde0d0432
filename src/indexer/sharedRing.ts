// A single-producer, single-consumer ring of variable-length u32 entries in
// a SharedArrayBuffer: how queued ingest batches reach a shard thread and
// their results come back, with no message serialization or copy beyond
// writing the words once. Each entry starts with its length in words; a 0
// where an entry would start means "the rest of the ring is padding, go on
// at word 0". One word always stays free, so head === tail means empty.
//
// The producer fills a reserved entry and then publishes it (Atomics.store of
// the tail); the consumer reads it and then releases it (Atomics.store of the
// head): each side writes only its own index, and the atomic stores order the
// data words before them.

/** Control words before the data: head (consumer's next entry), tail (producer's next free word). */
const HEAD = 0;
const TAIL = 1;
const CONTROL_BYTES = 16;

export class SharedRing {
  /** The data words. */
  readonly words: Uint32Array;
  /** The same words, signed (result codes). */
  readonly signed: Int32Array;
  /** Head and tail; Atomics.notify on TAIL tells a waiting consumer that an entry arrived. */
  readonly control: Int32Array;
  readonly size: number;

  constructor(readonly buffer: SharedArrayBuffer) {
    this.control = new Int32Array(buffer, 0, 2);
    this.words = new Uint32Array(buffer, CONTROL_BYTES);
    this.signed = new Int32Array(buffer, CONTROL_BYTES);
    this.size = this.words.length;
  }

  static create(words: number): SharedRing {
    return new SharedRing(new SharedArrayBuffer(CONTROL_BYTES + words * 4));
  }

  /** A byte view of `length` bytes from data word `word` (raw messages travel as bytes inside an entry). */
  bytes(word: number, length: number): Uint8Array {
    return new Uint8Array(this.buffer, CONTROL_BYTES + word * 4, length);
  }

  /** Largest entry the ring takes (it must also fit beside a padded end): bigger ones go another way. */
  get maxEntry(): number {
    return Math.floor(this.size / 2) - 1;
  }

  // ---- producer ----------------------------------------------------------

  /**
   * Where an entry of `n` words (its length word included) can be written
   * now, or -1 when the consumer has not freed enough yet. Writes the
   * length word; fill words [at + 1, at + n) and then publish(at, n).
   */
  reserve(n: number): number {
    const head = Atomics.load(this.control, HEAD);
    const tail = this.control[TAIL]; // only this side writes it
    let at = tail;
    if (tail >= head) {
      // Free: [tail, size) and [0, head - 1). Ending exactly at size wraps the tail to 0, which must not reach head.
      if (n > this.size - tail || (n === this.size - tail && head === 0)) {
        if (n > head - 1) return -1;
        this.words[tail] = 0; // pad the end: the consumer goes on at 0
        at = 0;
      }
    } else if (n > head - tail - 1) {
      return -1;
    }
    this.words[at] = n;
    return at;
  }

  /**
   * Makes the entry reserved at `at` (of `n` words) visible to the consumer,
   * and wakes a consumer waiting on TAIL unless `wake` is false (the
   * producer then calls wakeConsumer() itself, once for several entries:
   * waking an Atomics.waitAsync costs the producer microseconds).
   */
  publish(at: number, n: number, wake = true): void {
    const next = at + n === this.size ? 0 : at + n;
    Atomics.store(this.control, TAIL, next);
    if (wake) Atomics.notify(this.control, TAIL);
  }

  /** Wakes a consumer waiting on TAIL for entries published without waking it. */
  wakeConsumer(): void {
    Atomics.notify(this.control, TAIL);
  }

  /** The tail as last published (a consumer that waits on TAIL compares against it). */
  get tail(): number {
    return Atomics.load(this.control, TAIL);
  }

  // ---- consumer ----------------------------------------------------------

  /** Where the next entry starts, or -1 when the ring is empty. Its length is words[at]. */
  next(): number {
    let head = this.control[HEAD]; // only this side writes it
    const tail = Atomics.load(this.control, TAIL);
    if (head === tail) return -1;
    if (this.words[head] === 0) {
      // padding up to the end: the entry is at 0 (the producer published it after writing the pad)
      head = 0;
      Atomics.store(this.control, HEAD, 0);
      if (head === tail) return -1;
    }
    return head;
  }

  /** Frees the entry at `at` (returned by next()) for the producer. */
  release(at: number): void {
    const n = this.words[at];
    Atomics.store(this.control, HEAD, at + n === this.size ? 0 : at + n);
  }

  /** The head as the consumer last released it (a producer waiting for room compares against it). */
  get head(): number {
    return Atomics.load(this.control, HEAD);
  }

  /** The control word index a consumer waits on for new entries. */
  static readonly TAIL = TAIL;
  /** The control word index a producer waits on for room. */
  static readonly HEAD = HEAD;
}
