// The naive baseline the benchmarks compare against: string keys in a Map,
// a Set of worker keys per block, BigInt hashing per block. Only what the
// benchmarked paths need (stored/removed events and find_matches).
import { sequenceHash } from "../src/hashing/blockHash.js";
import type { Overlaps } from "../src/indexer/types.js";
import type { IndexEvent } from "../src/protocols/events.js";

export class NaiveIndex {
  private readonly holders = new Map<string, Set<string>>();
  /** worker key -> external hash (string) -> sequence hash (string). */
  private readonly byWorker = new Map<string, Map<string, string>>();

  apply(e: IndexEvent): void {
    const key = `${e.workerId}:${e.dpRank}`;
    let mine = this.byWorker.get(key);
    if (mine === undefined) this.byWorker.set(key, (mine = new Map()));
    if (e.kind === "stored") {
      let parent: bigint | undefined;
      if (e.parentHash !== undefined) {
        const p = mine.get(String(e.parentHash));
        if (p === undefined) return;
        parent = BigInt(p);
      }
      for (const b of e.blocks) {
        const seq = sequenceHash(parent, b.localHash);
        const s = String(seq);
        mine.set(String(b.externalHash), s);
        let set = this.holders.get(s);
        if (set === undefined) this.holders.set(s, (set = new Set()));
        set.add(key);
        parent = seq;
      }
    } else if (e.kind === "removed") {
      for (const h of e.blockHashes) {
        const s = mine.get(String(h));
        if (s === undefined) continue;
        mine.delete(String(h));
        this.holders.get(s)?.delete(key);
      }
    }
  }

  findMatches(seqs: readonly bigint[]): Overlaps {
    const out: Overlaps = new Map();
    let alive: string[] = [];
    let d = 0;
    for (; d < seqs.length; d++) {
      const set = this.holders.get(String(seqs[d]));
      if (set === undefined || set.size === 0) break;
      if (d === 0) {
        alive = [...set];
        continue;
      }
      const next: string[] = [];
      for (const w of alive) {
        if (set.has(w)) next.push(w);
        else out.set(w, d);
      }
      alive = next;
      if (alive.length === 0) break;
    }
    for (const w of alive) out.set(w, d);
    return out;
  }
}
