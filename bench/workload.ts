// Benchmark workloads: KV events for 64 workers built from the Mooncake
// conversation trace (each hash id stands for 512 tokens, expanded into
// deterministic synthetic token ids) or from a synthetic random-prefix mix,
// plus prompts that hit those prefixes.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { localBlockHash, sequenceHash } from "../src/hashing/blockHash.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { seededRandom } from "../src/util/random.js";

export const BLOCK = 64;
export const WORKERS = 64;
export const TRACE = fileURLToPath(new URL("../../shared/data/mooncake_conversation_trace.jsonl", import.meta.url));
const TOKENS_PER_HASH_ID = 512;

export interface Workload {
  name: string;
  events: IndexEvent[];
  /** (block, worker) entries the events store. */
  storedBlocks: number;
  /** Prompts (token ids) whose prefixes the events index. */
  prompts(tokens: number, count: number): Uint32Array[];
}

/** Token ids of one 512-token trace block: a fixed function of the hash id. */
function traceTokens(hashId: number): Uint32Array {
  const t = new Uint32Array(TOKENS_PER_HASH_ID);
  let x = (hashId + 1) * 0x9e3779b1;
  for (let i = 0; i < t.length; i++) {
    x = (Math.imul(x ^ (x >>> 15), 0x85ebca77) + i) >>> 0;
    t[i] = x % 128_000;
  }
  return t;
}

/** Builds events that make each worker hold its requests' blocks, until `target` entries. */
class EventBuilder {
  readonly events: IndexEvent[] = [];
  stored = 0;
  private readonly held = Array.from({ length: WORKERS }, () => new Set<bigint>());
  private readonly nextId = new Array<bigint>(WORKERS).fill(1n);

  /** Worker `w` caches a prompt given by its local hashes; stores only what it lacks. */
  add(w: number, locals: readonly bigint[], seqs: readonly bigint[]): void {
    const held = this.held[w];
    let k = 0;
    while (k < seqs.length && held.has(seqs[k])) k++;
    if (k === seqs.length) return;
    const blocks = [];
    for (let j = k; j < seqs.length; j++) {
      blocks.push({ externalHash: seqs[j], localHash: locals[j] });
      held.add(seqs[j]);
    }
    this.stored += blocks.length;
    this.events.push({
      kind: "stored",
      workerId: BigInt(w + 1),
      dpRank: 0,
      eventId: this.nextId[w]++,
      parentHash: k > 0 ? seqs[k - 1] : undefined,
      blocks,
    });
  }
}

function chain(locals: readonly bigint[]): bigint[] {
  const seqs: bigint[] = [];
  let parent: bigint | undefined;
  for (const l of locals) seqs.push((parent = sequenceHash(parent, l)));
  return seqs;
}

export function mooncake(target: number): Workload {
  const requests = readFileSync(TRACE, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => (JSON.parse(l) as { hash_ids: number[] }).hash_ids);
  const blockHashes = new Map<number, bigint[]>();
  const localsOf = (hashId: number): bigint[] => {
    let hs = blockHashes.get(hashId);
    if (hs === undefined) {
      const t = traceTokens(hashId);
      hs = [];
      for (let i = 0; i < TOKENS_PER_HASH_ID; i += BLOCK) hs.push(localBlockHash(t.subarray(i, i + BLOCK)));
      blockHashes.set(hashId, hs);
    }
    return hs;
  };
  const b = new EventBuilder();
  // Replays the trace (shifting the worker assignment on each pass) until the index is full.
  for (let pass = 0; b.stored < target && pass < 64; pass++) {
    for (let i = 0; i < requests.length && b.stored < target; i++) {
      const locals = requests[i].flatMap(localsOf);
      b.add((i * 5 + pass * 17) % WORKERS, locals, chain(locals));
    }
  }
  const long = requests.filter((ids) => ids.length * TOKENS_PER_HASH_ID >= 8192);
  return {
    name: "mooncake",
    events: b.events,
    storedBlocks: b.stored,
    prompts(tokens, count) {
      const rnd = seededRandom(11);
      return Array.from({ length: count }, () => {
        const ids = long[Math.floor(rnd() * Math.min(long.length, 2000))];
        const out = new Uint32Array(tokens);
        for (let i = 0; i * TOKENS_PER_HASH_ID < tokens; i++) out.set(traceTokens(ids[i]).subarray(0, Math.min(TOKENS_PER_HASH_ID, tokens - i * TOKENS_PER_HASH_ID)), i * TOKENS_PER_HASH_ID);
        return out;
      });
    },
  };
}

/** Random prompts: one of 512 shared prefixes (0..96 blocks) and a unique tail, 128 blocks in all. */
export function randomPrefix(target: number): Workload {
  const rnd = seededRandom(5);
  const randomTokens = (n: number) => Uint32Array.from({ length: n }, () => Math.floor(rnd() * 128_000));
  const prefixes = Array.from({ length: 512 }, () => randomTokens(BLOCK * Math.floor(rnd() * 97)));
  const prefixLocals = prefixes.map((p) => {
    const hs: bigint[] = [];
    for (let i = 0; i < p.length; i += BLOCK) hs.push(localBlockHash(p.subarray(i, i + BLOCK)));
    return hs;
  });
  const b = new EventBuilder();
  while (b.stored < target) {
    const p = Math.floor(rnd() * prefixes.length);
    const tailBlocks = 128 - prefixLocals[p].length;
    const tail = randomTokens(tailBlocks * BLOCK);
    const locals = [...prefixLocals[p]];
    for (let i = 0; i < tail.length; i += BLOCK) locals.push(localBlockHash(tail.subarray(i, i + BLOCK)));
    b.add(Math.floor(rnd() * WORKERS), locals, chain(locals));
  }
  return {
    name: "random-prefix",
    events: b.events,
    storedBlocks: b.stored,
    prompts(tokens, count) {
      const r = seededRandom(13);
      return Array.from({ length: count }, () => {
        const p = prefixes[Math.floor(r() * prefixes.length)];
        const out = Uint32Array.from({ length: tokens }, () => Math.floor(r() * 128_000));
        out.set(p.subarray(0, Math.min(p.length, tokens)));
        return out;
      });
    },
  };
}

/** Single-block stored events extending each worker's chain: a steady background stream. */
export function* steadyEvents(seed: number, firstEventId = 1n): Generator<IndexEvent> {
  const rnd = seededRandom(seed);
  const last = new Array<bigint | undefined>(WORKERS).fill(undefined);
  const ids = new Array<bigint>(WORKERS).fill(firstEventId);
  for (let n = 0; ; n++) {
    const w = Math.floor(rnd() * WORKERS);
    const localHash = BigInt(Math.floor(rnd() * 2 ** 32)) * 0x100000001n;
    const externalHash = (BigInt(seed) << 48n) + BigInt(n);
    yield {
      kind: "stored",
      workerId: BigInt(w + 1),
      dpRank: 0,
      eventId: ids[w]++,
      parentHash: last[w],
      blocks: [{ externalHash, localHash }],
    };
    last[w] = externalHash;
  }
}
