// A tiny, obviously-correct model of the router: plain Maps and linear scans,
// written straight from ROUTER.md, to check the real router against.
import { hashPrompt, localBlockHash, sequenceHash } from "../../src/hashing/blockHash.js";

export interface ModelScore {
  key: string;
  overlap: number;
  prefillBlocks: number;
  decodeBlocks: number;
  logit: number;
}

interface ModelWorker {
  /** external hash -> sequence hash */
  blocks: Map<bigint, bigint>;
  lastEventId?: bigint;
}

interface ModelRequest {
  key: string;
  blocks: bigint[];
  prefill: number;
  prefillDone: boolean;
}

export type ModelEvent =
  | { kind: "stored"; worker: number; dp: number; id: number; parent?: bigint; blocks: { ext: bigint; tokens: number[] }[] }
  | { kind: "removed"; worker: number; dp: number; id: number; exts: bigint[] }
  | { kind: "cleared"; worker: number; dp: number; id: number };

export class ReferenceModel {
  readonly workers = new Map<string, ModelWorker>();
  readonly registered = new Map<number, number[]>();
  readonly requests = new Map<string, ModelRequest>();

  constructor(
    readonly blockSize: number,
    readonly weight: number,
  ) {}

  /** Returns "applied" or the rejection reason, exactly as the router should. */
  apply(e: ModelEvent): string {
    const key = `${e.worker}:${e.dp}`;
    const w = this.workers.get(key);
    if (w?.lastEventId !== undefined && BigInt(e.id) <= w.lastEventId) return "stale_event_id";
    let parentSeq: bigint | undefined;
    if (e.kind === "stored" && e.parent !== undefined) {
      parentSeq = w?.blocks.get(e.parent);
      if (parentSeq === undefined) return "parent_block_not_found";
    }
    const worker: ModelWorker = w ?? { blocks: new Map() };
    this.workers.set(key, worker);
    worker.lastEventId = BigInt(e.id);
    if (e.kind === "stored") {
      for (const b of e.blocks) {
        const seq = sequenceHash(parentSeq, localBlockHash(b.tokens));
        if (!worker.blocks.has(b.ext)) worker.blocks.set(b.ext, seq);
        parentSeq = seq;
      }
    } else if (e.kind === "removed") {
      for (const ext of e.exts) worker.blocks.delete(ext);
    } else {
      worker.blocks.clear(); // scoped to (worker, dp_rank), as Dynamo's Cleared is
    }
    return "applied";
  }

  register(worker: number, dps: number[]): void {
    this.registered.set(worker, dps);
  }

  deregister(worker: number): void {
    this.registered.delete(worker);
    for (const k of [...this.workers.keys()]) if (k.startsWith(`${worker}:`)) this.workers.delete(k);
    for (const [id, r] of [...this.requests]) if (r.key.startsWith(`${worker}:`)) this.requests.delete(id);
  }

  candidates(): string[] {
    const keys = new Set<string>(this.workers.keys());
    for (const [w, dps] of this.registered) for (const dp of dps) keys.add(`${w}:${dp}`);
    return [...keys].sort();
  }

  scores(tokens: number[]): ModelScore[] {
    const seqs = hashPrompt(tokens, this.blockSize).sequence;
    return this.candidates().map((key) => {
      const held = new Set(this.workers.get(key)?.blocks.values() ?? []);
      let overlap = 0;
      while (overlap < seqs.length && held.has(seqs[overlap])) overlap++;
      const active = [...this.requests.values()].filter((r) => r.key === key);
      const activeBlocks = new Set(active.flatMap((r) => r.blocks));
      const prefillTokens = active.filter((r) => !r.prefillDone).reduce((a, r) => a + r.prefill, 0);
      const uncached = Math.max(0, tokens.length - overlap * this.blockSize);
      const prefillBlocks = (prefillTokens + uncached) / this.blockSize;
      const decodeBlocks = activeBlocks.size + seqs.filter((s) => !activeBlocks.has(s)).length;
      return {
        key,
        overlap,
        prefillBlocks,
        decodeBlocks,
        // Dynamo's cost with overlap credit 1 and prefill_load_scale = weight.
        logit: this.weight * prefillBlocks + decodeBlocks,
      };
    });
  }

  /** Keys the router may pick at temperature 0: every key with the lowest logit (Dynamo breaks ties uniformly). */
  bestKeys(scores: ModelScore[]): string[] {
    const minLogit = Math.min(...scores.map((s) => s.logit));
    return scores.filter((s) => s.logit === minLogit).map((s) => s.key);
  }

  route(requestId: string, key: string, tokens: number[], overlap: number): void {
    this.requests.set(requestId, {
      key,
      blocks: hashPrompt(tokens, this.blockSize).sequence,
      prefill: Math.max(0, tokens.length - overlap * this.blockSize),
      prefillDone: false,
    });
  }

  markPrefillCompleted(id: string): boolean {
    const r = this.requests.get(id);
    if (r) r.prefillDone = true;
    return r !== undefined;
  }

  free(id: string): boolean {
    return this.requests.delete(id);
  }
}
