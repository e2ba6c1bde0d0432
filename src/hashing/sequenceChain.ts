// Chaining the sequence hashes of a stored event's blocks, for the index
// (CompactCore.stored): in WebAssembly, one call per event with 64-bit
// multiplies (wasmXxh3.ts, chain()), about 9 ns a block against 80-100 ns
// for seqHash32's 32-bit arithmetic; with seqHash32 where WebAssembly does
// not load. Knowing an event's hashes before storing it also lets the index
// load their node-table buckets ahead (docs/indexer.md, "Touch pass").
import { seqHash32, seqOut } from "./sequence.js";
import { createWasmHasher } from "./wasmXxh3.js";

export interface SequenceChainer {
  /**
   * The sequence hashes of the n blocks at words [at, at + 4n) of `records`
   * (4 u32 per block, as the index's op records hold them: external lo, hi,
   * local lo, hi), chained from the parent (pLo, pHi) when `chained`, else
   * from the first block's local hash: (lo, hi) u32 pairs in words [0, 2n)
   * of the array returned (it may be longer; valid until the next call; no
   * allocation per call, as an event may be a single block).
   */
  chain(records: Uint32Array, at: number, n: number, pLo: number, pHi: number, chained: boolean): Uint32Array;
}

/** A chainer of its own (WebAssembly memory per instance), or the JavaScript one. */
export function createSequenceChainer(): SequenceChainer {
  let hasher;
  try {
    hasher = createWasmHasher();
  } catch {
    return jsSequenceChainer();
  }
  // A call into WebAssembly and its copies cost more than seqHash32 on a block or two (measured: single-block
  // events applied at 0.83x with every event chained there), so short events chain in JavaScript.
  const js = jsSequenceChainer();
  return {
    chain: (records, at, n, pLo, pHi, chained) =>
      n <= JS_UP_TO ? js.chain(records, at, n, pLo, pHi, chained) : hasher.chainSequence(records, at, n, pLo, pHi, chained),
  };
}

/** Blocks an event may have and still be chained in JavaScript (see createSequenceChainer). */
export const JS_UP_TO = 2;

/** The chainer with seqHash32 (exported for the bit-exactness test). */
export function jsSequenceChainer(): SequenceChainer {
  let out = new Uint32Array(64);
  return {
    chain(records, at, n, pLo, pHi, chained) {
      if (out.length < 2 * n) out = new Uint32Array(Math.max(2 * n, 2 * out.length));
      let sLo = pLo;
      let sHi = pHi;
      for (let i = 0, q = at; i < n; i++, q += 4) {
        if (chained || i > 0) {
          seqHash32(sLo, sHi, records[q + 2], records[q + 3]);
          sLo = seqOut.lo;
          sHi = seqOut.hi;
        } else {
          sLo = records[q + 2];
          sHi = records[q + 3];
        }
        out[2 * i] = sLo;
        out[2 * i + 1] = sHi;
      }
      return out;
    },
  };
}
