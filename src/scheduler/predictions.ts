// Predict-on-route: a prompt routed to a worker is assumed to be cached there
// for a short TTL, even in event mode, so siblings that arrive before the
// worker's stored event follow their prefix instead of scattering. When a
// prediction's TTL runs out it is scored: confirmed if the index (fed by the
// worker's events) now holds the whole predicted prefix, wrong otherwise.

interface Prediction {
  workerKey: string;
  blocks: readonly bigint[];
  expiresAt: number;
}

export interface PredictionOutcomes {
  confirmed: number;
  wrong: number;
}

export class PredictedBlocks {
  /** Per worker: predicted block -> predictions holding it. */
  private readonly byWorker = new Map<string, Map<bigint, number>>();
  /** In routing order; every entry has the same TTL, so also in expiry order. */
  private readonly pending: Prediction[] = [];
  private head = 0;
  private held = 0;

  constructor(
    private readonly ttlMs: number,
    /** Most predicted (block, worker) entries held; the oldest predictions go first. */
    private readonly maxBlocks: number,
    private readonly now: () => number,
  ) {}

  /** Predicted blocks held now (for tests and metrics). */
  get size(): number {
    return this.held;
  }

  /** Leading blocks of `blocks` the worker is predicted to hold past the first `from` (the index's overlap). */
  extend(workerKey: string, blocks: readonly bigint[], from: number): number {
    const held = this.byWorker.get(workerKey);
    if (held === undefined) return from;
    let i = from;
    while (i < blocks.length && held.has(blocks[i])) i++;
    return i;
  }

  routed(workerKey: string, blocks: readonly bigint[]): void {
    if (blocks.length === 0 || this.ttlMs <= 0) return;
    let held = this.byWorker.get(workerKey);
    if (held === undefined) {
      held = new Map();
      this.byWorker.set(workerKey, held);
    }
    for (const b of blocks) held.set(b, (held.get(b) ?? 0) + 1);
    this.held += blocks.length;
    this.pending.push({ workerKey, blocks, expiresAt: this.now() + this.ttlMs });
    while (this.held > this.maxBlocks && this.head < this.pending.length) this.drop(this.pending[this.head++]);
    this.compact();
  }

  /**
   * Drops the predictions past their TTL and scores each: `indexOverlap`
   * tells how many of its blocks the index holds for that worker now.
   */
  expire(indexOverlap: (workerKey: string, blocks: readonly bigint[]) => number): PredictionOutcomes {
    const outcomes = { confirmed: 0, wrong: 0 };
    const now = this.now();
    while (this.head < this.pending.length && this.pending[this.head].expiresAt <= now) {
      const p = this.pending[this.head++];
      this.drop(p);
      if (indexOverlap(p.workerKey, p.blocks) >= p.blocks.length) outcomes.confirmed++;
      else outcomes.wrong++;
    }
    this.compact();
    return outcomes;
  }

  /** Forgets every prediction for a worker that went away (they are not scored). */
  forgetWorker(matches: (workerKey: string) => boolean): void {
    for (const key of [...this.byWorker.keys()]) if (matches(key)) this.byWorker.delete(key);
    const kept = this.pending.slice(this.head).filter((p) => !matches(p.workerKey));
    this.pending.length = 0;
    this.pending.push(...kept);
    this.head = 0;
    this.held = kept.reduce((n, p) => n + p.blocks.length, 0);
  }

  private drop(p: Prediction): void {
    const held = this.byWorker.get(p.workerKey);
    if (held === undefined) return;
    for (const b of p.blocks) {
      const n = held.get(b);
      if (n === undefined) continue;
      if (n <= 1) held.delete(b);
      else held.set(b, n - 1);
      this.held--;
    }
    if (held.size === 0) this.byWorker.delete(p.workerKey);
  }

  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending.splice(0, this.head);
      this.head = 0;
    }
  }
}
