// A bounded mixed load for soak tests and capacity checks: concurrent clients
// route prompts that share prefixes, complete prefill and free them, while a
// feeder streams KV events for a fleet whose caches stay bounded (oldest
// blocks removed), so a healthy router's memory stays flat.
import { KvRouterClient } from "../client/kvRouterClient.js";
import { seededRandom } from "../util/random.js";

export interface MixedLoadOptions {
  address: string;
  durationMs: number;
  /** Hard cap on FindBestWorker calls, whatever the duration. */
  maxRequests: number;
  concurrency: number;
  workers: number;
  blockSize: number;
  /** Blocks each simulated worker keeps before evicting its oldest. */
  cacheBlocksPerWorker: number;
  /** Also picks the run's event-id and block-hash ranges. */
  seed: number;
}

export interface MixedLoadReport {
  durationS: number;
  requests: number;
  requestsPerS: number;
  events: number;
  eventsPerS: number;
  errors: number;
  firstError?: string;
  p50Ms: number;
  p99Ms: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export async function runMixedLoad(o: MixedLoadOptions): Promise<MixedLoadReport> {
  const client = new KvRouterClient(o.address);
  const rnd = seededRandom(o.seed);
  const started = performance.now();
  const deadline = started + o.durationMs;
  const latencies: number[] = [];
  let requests = 0;
  let events = 0;
  let errors = 0;
  let firstError: string | undefined;
  const fail = (e: unknown) => {
    errors++;
    firstError ??= String((e as Error)?.message ?? e);
  };

  // 32 "system prompts" of 8 blocks; each request adds a random 2-block user turn.
  const prefixes = Array.from({ length: 32 }, (_, p) => Array.from({ length: 8 * o.blockSize }, (_, i) => p * 100_000 + i));
  const prompt = () => [
    ...prefixes[Math.floor(rnd() * prefixes.length)],
    ...Array.from({ length: 2 * o.blockSize }, () => Math.floor(rnd() * 50_000)),
  ];

  const feeder = async () => {
    const held: bigint[][] = Array.from({ length: o.workers }, () => []);
    // Runs with different seeds use disjoint event ids and block hashes, so
    // they can follow one another against the same router.
    const eventIds = new Array<number>(o.workers).fill(o.seed * 1_000_000_000);
    let ext = BigInt(o.seed) << 40n;
    while (performance.now() < deadline && requests < o.maxRequests) {
      const batch = [];
      for (let k = 0; k < 16; k++) {
        const w = Math.floor(rnd() * o.workers);
        const tokens = prompt();
        const blocks = [];
        for (let i = 0; i + o.blockSize <= tokens.length; i += o.blockSize) {
          blocks.push({ blockHash: ext++, tokenIds: tokens.slice(i, i + o.blockSize) });
        }
        held[w].push(...blocks.map((b) => b.blockHash));
        batch.push({ workerId: BigInt(w + 1), eventId: BigInt(++eventIds[w]), data: { case: "stored" as const, value: { blocks } } });
        if (held[w].length > o.cacheBlocksPerWorker) {
          const evicted = held[w].splice(0, held[w].length - o.cacheBlocksPerWorker);
          batch.push({ workerId: BigInt(w + 1), eventId: BigInt(++eventIds[w]), data: { case: "removed" as const, value: { blockHashes: evicted } } });
        }
      }
      try {
        const res = await client.sendEvents(batch);
        events += Number(res.applied);
        if (res.rejected > 0n) fail(`events rejected: ${res.rejections[0]?.reason}`);
      } catch (e) {
        fail(e);
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  };

  const routeLoop = async (loop: number) => {
    let n = 0;
    while (performance.now() < deadline && requests < o.maxRequests) {
      requests++;
      const requestId = `soak-${loop}-${n++}`;
      const t0 = performance.now();
      try {
        await client.findBestWorker({ tokenIds: prompt(), requestId });
        latencies.push(performance.now() - t0);
        await client.markPrefillCompleted(requestId);
        await client.free(requestId);
      } catch (e) {
        fail(e);
      }
    }
  };

  for (let w = 1; w <= o.workers; w++) await client.registerWorker({ workerId: BigInt(w), leaseTtlSeconds: 3600 });
  await Promise.all([feeder(), ...Array.from({ length: o.concurrency }, (_, i) => routeLoop(i))]);
  client.close();
  const durationS = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    durationS,
    requests,
    requestsPerS: requests / durationS,
    events,
    eventsPerS: events / durationS,
    errors,
    firstError,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}
