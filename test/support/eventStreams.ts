// Test support: seeded IngestKvEvents streams whose final index does not
// depend on how concurrent streams interleave (each worker's events are in
// one stream only), with every case the raw-ingest paths must get right:
// chains that grow and shrink, stale and orphaned events, removals of unknown
// blocks, clears, multimodal blocks, a second dp rank.
import type { KvEvent } from "../../gen/kvrouter/v1/router_pb.js";
import { type EventInit, removed, stored } from "./events.js";
import { seededRandom } from "../../src/util/random.js";

export type Message = { events: EventInit[] };

/**
 * `streams` streams of `messages` messages for `workersPerStream` workers
 * each, at block size `B`. Engine-like (the default): a message holds 1-3
 * events, mostly of one worker. `relay`: a message holds 2-8 events of
 * workers drawn at random, as a relay publishing a whole fleet does.
 */
export function fleetStreams(seed: number, streams: number, workersPerStream: number, messages: number, B: number, relay = false): Message[][] {
  const rand = seededRandom(seed);
  const out: Message[][] = [];
  for (let s = 0; s < streams; s++) {
    const keys = Array.from({ length: workersPerStream }, (_, i) => ({ workerId: 100 * (s + 1) + i, dpRank: i % 2 }));
    const state = keys.map(() => ({ nextId: 1, chain: [] as bigint[], nextHash: 0n }));
    const eventFor = (k: number): EventInit => {
      const { workerId, dpRank } = keys[k];
      const st = state[k];
      if (st.nextHash === 0n) st.nextHash = BigInt(workerId) * 1_000_000n;
      const r = rand();
      let id = st.nextId++;
      if (r < 0.04 && id > 2) id -= 2; // stale
      if (r < 0.1 && st.chain.length > 0) {
        // a removal of the chain's tail, sometimes of a block never stored too
        const n = 1 + Math.floor(rand() * Math.min(3, st.chain.length));
        const hashes = st.chain.splice(st.chain.length - n, n);
        if (rand() < 0.3) hashes.push(999_999_999n);
        return removed(workerId, id, hashes, dpRank);
      }
      if (r < (relay ? 0.11 : 0.13)) {
        st.chain = [];
        return { workerId: BigInt(workerId), dpRank, eventId: BigInt(id), data: { case: "cleared", value: {} } };
      }
      const blocks = 1 + Math.floor(rand() * 4);
      const orphan = r > 0.97;
      const parent = orphan ? 123n : st.chain.at(-1);
      const toks = Array.from({ length: blocks * B }, (_, i) => (workerId * 31 + Number(st.nextHash % 1000n) * 7 + i) % 50_000);
      const ev = stored(workerId, id, toks, B, st.nextHash, { parent, dpRank });
      if (rand() < (relay ? 0.02 : 0.05) && ev.data?.case === "stored") ev.data.value.blocks![0].mmHashes = [7n];
      if (!orphan) for (let b = 0; b < blocks; b++) st.chain.push(st.nextHash + BigInt(b));
      st.nextHash += BigInt(blocks);
      return ev;
    };
    const stream: Message[] = [];
    for (let m = 0; m < messages; m++) {
      const events: EventInit[] = [];
      if (relay) {
        const n = 2 + Math.floor(rand() * 7);
        for (let e = 0; e < n; e++) events.push(eventFor(Math.floor(rand() * keys.length)));
      } else {
        const main = Math.floor(rand() * keys.length);
        const n = 1 + Math.floor(rand() * 3);
        for (let e = 0; e < n; e++) events.push(eventFor(rand() < 0.15 ? Math.floor(rand() * keys.length) : main));
      }
      stream.push({ events });
    }
    out.push(stream);
  }
  return out;
}

/** Each worker's dumped events in order (the order of workers in a dump follows creation, which concurrency may change). */
export function byWorker(events: KvEvent[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const e of events) {
    const key = `${e.workerId}:${e.dpRank}`;
    if (!out.has(key)) out.set(key, []);
    out.get(key)!.push(JSON.stringify(e, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
  }
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}
