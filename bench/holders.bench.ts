// Index memory and find_matches by the number of worker ranks known (issue 24
// §2), for today's core (holder sets, src/indexer/holderSets.ts) next to the
// core before it (bench/baseline/compactCore.ts: a slot bitset as wide as the
// highest slot on every node), both driven the same way in one process:
//
// - shared: N ranks each hold one shared block, then one more rank stores
//   `blocks` blocks in 128-block chains (one holder per node);
// - spread: N ranks known (the shared block), then 128-block chains each held
//   by 1-4 random ranks out of N, each holding a prefix of 64-128 blocks.
//
// Memory: the core sized for its pairs (as --max-blocks sizes it), per
// (block, worker) pair held, without the per-rank tables (the slot table's
// 26 bytes per rank the index is sized for, and the core's own: 8 bytes per
// such rank in the baseline, 24 per rank up to the highest held today;
// reported apart): its typed arrays (what
// kvrouter_index_memory_bytes reports) and V8's heap + array buffers. The
// baseline holds fewer blocks where a full run would not fit in memory (its
// cost per block is fixed by the rank count). find_matches is timed on the
// core alone (no prompt hashing, no Map of answers) on 128-block prompts of
// those chains, cores alternating in slices: the holder-set cores of every
// rank count together, then each baseline with the holder-set core of its
// rank count (a baseline of several hundred MB evicts the caches of whatever
// runs between its queries, so the rank-count comparison leaves it out). The 64-rank default
// fleet is compared too, on the index benchmark's workloads (ingest and
// find_matches, alternating rounds).
import { CompactCore, MAX_SLOTS, SlotTable } from "../src/indexer/compactCore.js";
import { RecordWriter, stampsOf } from "../src/indexer/records.js";
import { hashPromptFast } from "../src/hashing/prompt.js";
import { type EventBatch, toEventBatch } from "../src/protocols/eventBatch.js";
import type { IndexEvent } from "../src/protocols/events.js";
import { seededRandom } from "../src/util/random.js";
import { seqHash32, seqOut } from "../src/hashing/sequence.js";
import { CompactCore as BaselineCore, SlotTable as BaselineSlots } from "./baseline/compactCore.js";
import { type Latency, gc, latency, median } from "./stats.js";
import { BLOCK, type Workload } from "./workload.js";

export type CoreKind = "holder sets" | "baseline";
export const KINDS: readonly CoreKind[] = ["baseline", "holder sets"];

/** One core of either kind, fed records and asked prompts the same way. */
export class Driver {
  private readonly core: CompactCore | BaselineCore;
  private readonly writer = new RecordWriter();
  private out = new Int32Array(4096);
  private clock = 1;
  // the baseline's find buffers (sized by its bitset width)
  private alive = new Uint32Array(2);
  private foundSlot = new Int32Array(64);
  private foundDepth = new Int32Array(64);

  constructor(
    readonly kind: CoreKind,
    maxSlots: number,
    initialEntries: number,
  ) {
    this.core =
      kind === "baseline"
        ? new BaselineCore(new BaselineSlots(new ArrayBuffer(BaselineSlots.bytes(maxSlots)), maxSlots), initialEntries)
        : new CompactCore(new SlotTable(new ArrayBuffer(SlotTable.bytes(maxSlots)), maxSlots), initialEntries);
  }

  /** Encodes events as records (slot = worker id - 1), ready for apply(): chunks of up to 4,096 events. */
  encode(events: readonly IndexEvent[]): { words: Uint32Array; count: number }[] {
    const chunks: { words: Uint32Array; count: number }[] = [];
    for (let i = 0; i < events.length; i += 4096) {
      const batch: EventBatch = toEventBatch(events.slice(i, i + 4096));
      this.writer.reset();
      for (let k = 0; k < batch.count; k++) {
        this.writer.batchEvent(batch, k, Number(events[i + k].workerId) - 1, this.clock, false);
        this.clock += stampsOf(batch, k);
      }
      chunks.push({ words: this.writer.words.slice(0, this.writer.length), count: this.writer.count });
    }
    return chunks;
  }

  apply(chunks: { words: Uint32Array; count: number }[]): void {
    for (const c of chunks) {
      if (this.out.length < c.count) this.out = new Int32Array(c.count);
      this.core.applyRecords(c.words, c.count, this.out);
    }
  }

  /** find_matches on (lo, hi) sequence-hash words; returns how many (slot, depth) answers. */
  find(h: Uint32Array, n: number): number {
    const c = this.core;
    if (c instanceof CompactCore) return c.findMatches(h, n);
    const words = c.bitsetWords;
    if (this.alive.length < words) {
      this.alive = new Uint32Array(words);
      this.foundSlot = new Int32Array(words * 32);
      this.foundDepth = new Int32Array(words * 32);
    }
    return c.findMatches(h, n, this.foundSlot, this.foundDepth, this.alive);
  }

  bytes(): number {
    return this.core.arrayBytes();
  }

  /** The core's per-rank arrays: the baseline's list heads (8 bytes per rank it is sized for), today's list ends and stamps (24 per rank up to the highest it holds). */
  coreRankBytes(maxSlots: number): number {
    return this.core instanceof CompactCore ? this.core.perSlotBytes() : maxSlots * 8;
  }

  get entries(): number {
    return this.core.entries;
  }
}

/** V8 heap + array buffers, after collecting. */
function heapBytes(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Sequence hashes of a chain of local hashes (lo, hi words), as the router's hasher makes them. */
function chainWords(locals: Uint32Array): Uint32Array {
  const n = locals.length / 2;
  const out = new Uint32Array(n * 2);
  let lo = locals[0];
  let hi = locals[1];
  out[0] = lo;
  out[1] = hi;
  for (let i = 1; i < n; i++) {
    seqHash32(lo, hi, locals[2 * i], locals[2 * i + 1]);
    lo = out[2 * i] = seqOut.lo;
    hi = out[2 * i + 1] = seqOut.hi;
  }
  return out;
}

const u64 = (lo: number, hi: number) => (BigInt(hi) << 32n) | BigInt(lo);

/** A scenario: the events that make the N ranks known, the events measured, and prompts (sequence-hash words) over them. */
interface Scenario {
  name: string;
  ranks: number;
  /** Slots the core needs (the --max-worker-ranks it would run with). */
  maxSlots: number;
  setup: IndexEvent[];
  measured: IndexEvent[];
  /** (block, worker) pairs `measured` stores. */
  pairs: number;
  prompts: Uint32Array[];
}

const CHAIN = 128;
const SHARED = 0x5eed_0000_0000_0001n;

/** N ranks each store the shared block (worker ids 1..N). */
function knownRanks(n: number): IndexEvent[] {
  return Array.from({ length: n }, (_, i) => ({
    kind: "stored" as const,
    workerId: BigInt(i + 1),
    dpRank: 0,
    eventId: 1n,
    blocks: [{ externalHash: 1n, localHash: SHARED }],
  }));
}

/** Random chains of local hashes, 2 words per block. */
function chains(count: number, seed: number): Uint32Array[] {
  const rnd = seededRandom(seed);
  return Array.from({ length: count }, () => Uint32Array.from({ length: CHAIN * 2 }, () => Math.floor(rnd() * 2 ** 32)));
}

/** A stored event of `locals` blocks [from, to) of a chain (the parent is block from - 1). */
function storeChain(workerId: number, eventId: bigint, locals: Uint32Array, to: number, extBase: bigint): IndexEvent {
  return {
    kind: "stored",
    workerId: BigInt(workerId),
    dpRank: 0,
    eventId,
    blocks: Array.from({ length: to }, (_, i) => ({ externalHash: extBase + BigInt(i), localHash: u64(locals[2 * i], locals[2 * i + 1]) })),
  };
}

export function sharedScenario(ranks: number, blocks: number, queries: number): Scenario {
  const cs = chains(Math.ceil(blocks / CHAIN), 17);
  const heavy = ranks + 1;
  const measured = cs.map((c, i) => storeChain(heavy, BigInt(2 + i), c, CHAIN, 1_000_000n + BigInt(i) * 1000n));
  const rnd = seededRandom(3);
  return {
    name: "shared",
    ranks,
    maxSlots: Math.max(MAX_SLOTS, ranks + 1),
    setup: knownRanks(ranks),
    measured,
    pairs: cs.length * CHAIN,
    prompts: Array.from({ length: queries }, () => chainWords(cs[Math.floor(rnd() * cs.length)])),
  };
}

export function spreadScenario(ranks: number, blocks: number, queries: number): Scenario {
  const cs = chains(Math.ceil(blocks / CHAIN), 19);
  const rnd = seededRandom(5);
  const nextId = new Map<number, bigint>();
  const measured: IndexEvent[] = [];
  let pairs = 0;
  cs.forEach((c, i) => {
    const holders = new Set(Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => 1 + Math.floor(rnd() * ranks)));
    for (const w of holders) {
      const id = (nextId.get(w) ?? 1n) + 1n;
      nextId.set(w, id);
      const len = 64 + Math.floor(rnd() * (CHAIN - 63));
      measured.push(storeChain(w, id, c, len, 1_000_000n + BigInt(i) * 1000n));
      pairs += len;
    }
  });
  return {
    name: "spread",
    ranks,
    maxSlots: Math.max(MAX_SLOTS, ranks + 1),
    setup: knownRanks(ranks),
    measured,
    pairs,
    prompts: Array.from({ length: queries }, () => chainWords(cs[Math.floor(rnd() * cs.length)])),
  };
}

export interface ScenarioResult {
  ranks: number;
  /** (block, worker) pairs held: the N ranks' shared block and the measured ones. */
  pairs: number;
  /** Index arrays (what kvrouter_index_memory_bytes reports) less the per-rank tables, per pair held. */
  bytesPerPair: number;
  /** The same from V8 (heap + array buffers the core added, its Maps and Sets included). */
  heapBytesPerPair: number;
  /** Per-rank tables: the slot table (26 bytes per rank the index is sized for) and the core's (coreRankBytes). */
  perRankMB: number;
  /** Index arrays in all. */
  indexMB: number;
  /** Measured pairs stored per second (one core, records pre-encoded). */
  ingestPairsPerSec: number;
  findMatchesUs: Latency;
  /** Per round, the p50. */
  findMatchesRoundP50: number[];
  meanAnswers: number;
  /** Holder sets: p50 over the baseline's, the two timed together (alternating slices). */
  vsBaselineP50?: number;
}


/** Builds one core of `kind` for a scenario, sized for its pairs as --max-blocks would, and measures memory and ingest; the core stays for queries. */
function build(kind: CoreKind, s: Scenario): { driver: Driver; result: Omit<ScenarioResult, "findMatchesUs" | "findMatchesRoundP50" | "meanAnswers"> } {
  const pairs = s.ranks + s.pairs;
  let driver: Driver | undefined = new Driver(kind, s.maxSlots, pairs);
  const setup = driver.encode(s.setup);
  const measured = driver.encode(s.measured);
  driver = undefined;
  const heap0 = heapBytes();
  driver = new Driver(kind, s.maxSlots, pairs);
  driver.apply(setup);
  const t0 = performance.now();
  driver.apply(measured);
  const secs = (performance.now() - t0) / 1000;
  const heap1 = heapBytes(); // the encoded records are still alive: only the core's growth counts
  setup.length = 0;
  measured.length = 0;
  if (driver.entries !== pairs) throw new Error(`${kind}: ${driver.entries} entries, expected ${pairs}`);
  return {
    driver,
    result: {
      ranks: s.ranks,
      pairs,
      // The core's arrays count its list heads (8 bytes per rank); the slot table (26) is the index front-end's.
      bytesPerPair: (driver.bytes() - driver.coreRankBytes(s.maxSlots)) / pairs,
      heapBytesPerPair: (heap1 - heap0 - SlotTable.bytes(s.maxSlots) - driver.coreRankBytes(s.maxSlots)) / pairs,
      perRankMB: (SlotTable.bytes(s.maxSlots) + driver.coreRankBytes(s.maxSlots)) / 2 ** 20,
      indexMB: driver.bytes() / 2 ** 20,
      ingestPairsPerSec: s.pairs / secs,
    },
  };
}

/**
 * find_matches latency of each driver on its own prompts, alternating slices
 * of `slice` prompts between drivers; also each round's p50 per driver.
 */
function timeQueries(drivers: Driver[], prompts: Uint32Array[][], rounds: number, slice = 50) {
  const samples = drivers.map(() => [] as number[]);
  const roundP50 = drivers.map(() => [] as number[]);
  const answers = drivers.map(() => 0);
  drivers.forEach((d, k) => prompts[k].slice(0, 100).forEach((p) => d.find(p, p.length / 2))); // warm-up
  const n = Math.max(...prompts.map((p) => p.length));
  for (let r = 0; r < rounds; r++) {
    const round = drivers.map(() => [] as number[]);
    for (let start = 0; start < n; start += slice) {
      drivers.forEach((d, k) => {
        for (const p of prompts[k].slice(start, start + slice)) {
          const t = process.hrtime.bigint();
          answers[k] += d.find(p, p.length / 2);
          round[k].push(Number(process.hrtime.bigint() - t) / 1000);
        }
      });
    }
    round.forEach((xs, k) => {
      samples[k].push(...xs);
      roundP50[k].push(median(xs));
    });
  }
  return drivers.map((_, k) => ({ lat: latency(samples[k]), roundP50: roundP50[k], meanAnswers: answers[k] / samples[k].length }));
}

export interface HolderBenchConfig {
  /** Blocks the measured rank stores (shared) or chains hold (spread). */
  blocks: number;
  /** The baseline's blocks are capped so its index stays near this many bytes. */
  baselineMaxBytes: number;
  ranks: number[];
  /** The baseline runs up to this many ranks (making 100,000 ranks known takes it about a minute). */
  baselineMaxRanks: number;
  queries: number;
  rounds: number;
}

/** Both scenarios at each rank count: per scenario and rank count, a result per core kind. */
export function runFleetBench(cfg: HolderBenchConfig, log: (m: string) => void) {
  const out: Record<string, Record<string, Partial<Record<CoreKind, ScenarioResult>>>> = {};
  for (const make of [sharedScenario, spreadScenario]) {
    const name = make === sharedScenario ? "shared" : "spread";
    const byRanks: Record<string, Partial<Record<CoreKind, ScenarioResult>>> = {};
    out[name] = byRanks;
    // Holder sets at every rank count, timed together (no baseline in between to evict their caches).
    const scenarios = cfg.ranks.map((ranks) => make(ranks, cfg.blocks, cfg.queries));
    const drivers = scenarios.map((s) => {
      log(`${name}, ${s.ranks} ranks: holder sets, ${s.pairs} pairs`);
      const { driver, result } = build("holder sets", s);
      byRanks[String(s.ranks)] = { "holder sets": { ...result, findMatchesUs: { p50: NaN, p99: NaN, max: NaN }, findMatchesRoundP50: [], meanAnswers: 0 } };
      return driver;
    });
    const lat = timeQueries(drivers, scenarios.map((s) => s.prompts), cfg.rounds);
    scenarios.forEach((s, k) => {
      const r = byRanks[String(s.ranks)]["holder sets"]!;
      r.findMatchesUs = lat[k].lat;
      r.findMatchesRoundP50 = lat[k].roundP50;
      r.meanAnswers = lat[k].meanAnswers;
    });
    // The baseline at each rank count, one at a time, timed against the holder sets core of that count.
    scenarios.forEach((s, k) => {
      if (s.ranks > cfg.baselineMaxRanks) return;
      // It pays ceil(ranks / 32) words per node: fewer blocks keep it within memory.
      const blocks = Math.min(cfg.blocks, Math.floor(cfg.baselineMaxBytes / (4 * Math.ceil((s.ranks + 1) / 32) * 1.3)));
      const bs = make(s.ranks, blocks, cfg.queries);
      log(`${name}, ${s.ranks} ranks: baseline, ${bs.pairs} pairs`);
      const { driver, result } = build("baseline", bs);
      const pair = timeQueries([driver, drivers[k]], [bs.prompts, s.prompts], cfg.rounds);
      byRanks[String(s.ranks)].baseline = { ...result, findMatchesUs: pair[0].lat, findMatchesRoundP50: pair[0].roundP50, meanAnswers: pair[0].meanAnswers };
      byRanks[String(s.ranks)]["holder sets"]!.vsBaselineP50 = pair[1].lat.p50 / pair[0].lat.p50;
    });
  }
  return out;
}

/** The 64-rank default fleet on a benchmark workload: ingest (alternating fresh cores) and find_matches (alternating slices). */
export function runDefaultFleetAB(w: Workload, queries: number, rounds: number) {
  const prompts = w.prompts(8192, queries).map((t) => {
    const seq = hashPromptFast(t, BLOCK).sequence;
    const words = new Uint32Array(seq.length * 2);
    seq.forEach((h, i) => {
      words[2 * i] = Number(h & 0xffffffffn);
      words[2 * i + 1] = Number(h >> 32n);
    });
    return words;
  });
  const rates: Record<CoreKind, number[]> = { baseline: [], "holder sets": [] };
  let keep: Driver[] = [];
  for (let r = 0; r < rounds; r++) {
    keep = [];
    for (const kind of r % 2 === 0 ? KINDS : [...KINDS].reverse()) {
      const d = new Driver(kind, MAX_SLOTS, w.storedBlocks);
      const chunks = d.encode(w.events);
      gc();
      const t0 = performance.now();
      d.apply(chunks);
      rates[kind].push(w.storedBlocks / ((performance.now() - t0) / 1000));
      keep.push(d);
    }
  }
  const drivers = KINDS.map((k) => keep.find((d) => d.kind === k)!);
  const lat = timeQueries(drivers, [prompts, prompts], rounds);
  const result: Record<string, unknown> = {};
  KINDS.forEach((kind, k) => {
    result[kind] = {
      ingestBlocksPerSec: median(rates[kind]),
      ingestRange: [Math.min(...rates[kind]), Math.max(...rates[kind])],
      findMatchesUs: lat[k].lat,
      bytesPerEntry: drivers[k].bytes() / w.storedBlocks,
    };
  });
  const ratioIngest = rates["holder sets"].map((x, i) => x / rates.baseline[i]);
  result.ratios = {
    ingest: { median: median(ratioIngest), min: Math.min(...ratioIngest), max: Math.max(...ratioIngest) },
    findMatchesP50: lat[1].lat.p50 / lat[0].lat.p50,
    findMatchesP50ByRound: lat[1].roundP50.map((x, i) => x / lat[0].roundP50[i]),
  };
  return result;
}

/** Table rows for bench/run.ts: [group, what, variant, figure, comparison]. */
export function holderRows(fleets: ReturnType<typeof runFleetBench>, defaultFleet: Record<string, Record<string, any>>): string[][] {
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }) : "-");
  const rows: string[][] = [];
  for (const [scenario, byRanks] of Object.entries(fleets)) {
    const at64 = byRanks["64"]?.["holder sets"];
    for (const [ranks, byKind] of Object.entries(byRanks)) {
      for (const kind of KINDS) {
        const r = byKind[kind];
        if (r === undefined) continue;
        const base = byKind.baseline;
        const vsBase = kind === "holder sets" && base !== undefined ? `; baseline ${f(base.bytesPerPair, 1)} B` : "";
        rows.push([`ranks: ${scenario}`, "bytes per (block, worker) pair (arrays | heap)", `${kind}, ${f(Number(ranks))} ranks`, `${f(r.bytesPerPair, 1)} | ${f(r.heapBytesPerPair, 1)}`, `${f(r.pairs)} pairs, index ${f(r.indexMB, 1)} MB${vsBase}`]);
      }
      for (const kind of KINDS) {
        const r = byKind[kind];
        if (r === undefined) continue;
        const cmp = [
          at64 !== undefined && kind === "holder sets" && ranks !== "64" ? `${f(r.findMatchesUs.p50 / at64.findMatchesUs.p50, 2)}x the 64-rank p50 (timed together)` : "",
          r.vsBaselineP50 !== undefined ? `${f(r.vsBaselineP50, 2)}x baseline timed with it` : "",
        ].filter((x) => x !== "");
        rows.push([`ranks: ${scenario}`, "find_matches 128 blocks, core only, p50/p99 us", `${kind}, ${f(Number(ranks))} ranks`, `${f(r.findMatchesUs.p50, 2)} / ${f(r.findMatchesUs.p99, 2)}`, cmp.join(", ")]);
      }
    }
  }
  for (const [name, r] of Object.entries(defaultFleet)) {
    const hs = r["holder sets"];
    const base = r.baseline;
    rows.push([`ranks: 64, ${name}`, "ingest blocks/s (core, median)", "holder sets", f(hs.ingestBlocksPerSec), `${f(r.ratios.ingest.median, 2)}x baseline (rounds ${f(r.ratios.ingest.min, 2)}-${f(r.ratios.ingest.max, 2)})`]);
    const byRound = r.ratios.findMatchesP50ByRound as number[];
    rows.push([`ranks: 64, ${name}`, "find_matches core p50/p99 us", "holder sets", `${f(hs.findMatchesUs.p50, 2)} / ${f(hs.findMatchesUs.p99, 2)}`, `${f(r.ratios.findMatchesP50, 2)}x baseline (rounds ${f(Math.min(...byRound), 2)}-${f(Math.max(...byRound), 2)})`]);
    rows.push([`ranks: 64, ${name}`, "bytes per entry (arrays)", "holder sets", f(hs.bytesPerEntry, 1), `baseline ${f(base.bytesPerEntry, 1)}`]);
  }
  return rows;
}
