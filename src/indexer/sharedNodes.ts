// The node side of a shard's index (node table, sequence hashes, holder
// sets) lives in SharedArrayBuffers, so the main thread answers queries by
// reading it while the shard keeps applying events (sharedReader.ts): no
// wake-up, no wait. This is the writer's half of that contract.
//
// - Arrays are never reallocated in place: growing, rehashing or packing one
//   makes new buffers, published on a MessagePort, and the generation word
//   is odd while that happens. A reader keeps its old buffers alive (the GC
//   frees them once neither thread holds them) and drops any answer read
//   across a generation change.
// - A node's holder set changes in place under its version word (odd while
//   it changes); only the bit flips of a LOW node (one word each) do not
//   bump it, since either value of a word is a whole state.
// - Removing a node table bucket shifts later buckets back, which could hide
//   a present key from a probe running at that moment: the table version is
//   odd while that happens, and a reader trusts a miss only if it did not
//   move.
// - The holder-set and table words the reader loads between the version
//   reads are ordinary loads: x86-64 keeps loads in order, other CPUs need a
//   fence JavaScript does not have, so only x86-64 reads shared (see
//   sharedReadsByDefault).

/** Header words (an Int32Array on a SharedArrayBuffer, one per shard). */
export const GEN = 0;
export const TABLE_VERSION = 1;
export const SHARED_HEADER_WORDS = 2;

/** The buffers a reader needs, as of generation `gen`. */
export interface NodeViews {
  gen: number;
  nTab: Uint32Array;
  /** The node table's index bits (a bucket holds node + 1 in them). */
  nBits: number;
  nLo: Uint32Array;
  nHi: Uint32Array;
  kind: Uint8Array;
  w: Uint32Array;
  pool: Uint32Array;
  ver: Uint32Array;
}

/** Where a core shares its node side: the header and a sink for new views (the shard thread posts them). */
export interface NodeSharing {
  header: Int32Array;
  post(views: NodeViews): void;
}

/** Shared reads are safe where plain loads are not reordered (see the header). */
export function sharedReadsByDefault(): boolean {
  return process.arch === "x64";
}

/** Brackets a core's relocations and table removals with the header words. */
export class NodePublisher {
  private depth = 0;

  constructor(
    private readonly sharing: NodeSharing,
    private readonly collect: () => Omit<NodeViews, "gen">,
  ) {}

  /** Buffers are about to be replaced (calls nest; the outermost pair counts). */
  relocating(): void {
    if (this.depth++ === 0) Atomics.add(this.sharing.header, GEN, 1);
  }

  /** Replaced: post the new buffers, then make the generation even again. */
  relocated(): void {
    if (--this.depth !== 0) return;
    const gen = Atomics.load(this.sharing.header, GEN) + 1;
    this.sharing.post({ ...this.collect(), gen });
    Atomics.store(this.sharing.header, GEN, gen);
  }

  tableChanging(): void {
    Atomics.add(this.sharing.header, TABLE_VERSION, 1);
  }

  tableChanged(): void {
    Atomics.add(this.sharing.header, TABLE_VERSION, 1);
  }
}
