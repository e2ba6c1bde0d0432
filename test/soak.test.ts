// Soak: a mixed FindBestWorker / MarkPrefillCompleted / Free / event load
// against the real CLI process for a fixed time (SOAK_SECONDS, 6 s in
// `make test`, 60 s in `make soak`). No errors, load fully released, and
// memory flat within a stated bound (the server runs with a 96 MB old space,
// so a leak crashes it). Figures are printed, never asserted on time.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { runMixedLoad } from "../src/loadgen/mixedLoad.js";
import { type RouterProcess, scrape, spawnRouter } from "./support/cliProcess.js";

const SECONDS = Number(process.env.SOAK_SECONDS ?? 6);
/** The server's old-generation limit: a leak of more than this crashes it (and fails the soak). */
const OLD_SPACE_MB = 96;
/** Allowed growth of the server's used heap from warm-up to the end. */
const HEAP_GROWTH_BOUND_MB = 64;
const B = 16;

describe("soak", () => {
  let router: RouterProcess;
  before(async () => {
    // A small old space makes a leak fatal within the run instead of hiding in lazy GC.
    router = await spawnRouter(
      ["--block-size", String(B), "--grpc-port", "0", "--metrics-port", "0", "--host", "127.0.0.1"],
      {},
      [`--max-old-space-size=${OLD_SPACE_MB}`],
    );
  });
  after(async () => {
    assert.equal(await router.stop(), 0, "graceful exit after the soak");
  });

  it(`holds a mixed load for ${SECONDS}s with no errors and flat memory`, async () => {
    const load = {
      address: router.grpcAddress,
      concurrency: 16,
      workers: 8,
      blockSize: B,
      cacheBlocksPerWorker: 2000,
      seed: 11,
    };
    // Warm-up fills the caches to their steady size before the baseline.
    const warm = await runMixedLoad({ ...load, durationMs: 1500, maxRequests: 1_000_000 });
    assert.equal(warm.errors, 0, warm.firstError);
    const heap0 = await scrape(router.metricsUrl!, "nodejs_heap_size_used_bytes");
    const rss0 = await scrape(router.metricsUrl!, "process_resident_memory_bytes");

    const report = await runMixedLoad({ ...load, durationMs: SECONDS * 1000, maxRequests: 5_000_000, seed: 12 });
    const heap1 = await scrape(router.metricsUrl!, "nodejs_heap_size_used_bytes");
    const rss1 = await scrape(router.metricsUrl!, "process_resident_memory_bytes");
    const blocks = await scrape(router.metricsUrl!, "kvrouter_index_blocks");
    const active = await scrape(router.metricsUrl!, "kvrouter_active_requests");
    const mb = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(
      `soak ${report.durationS.toFixed(1)}s: ${report.requests} routed (${report.requestsPerS.toFixed(0)}/s, ` +
        `p50 ${report.p50Ms.toFixed(2)} ms, p99 ${report.p99Ms.toFixed(2)} ms), ${report.events} events ` +
        `(${report.eventsPerS.toFixed(0)}/s), errors ${report.errors}; heap ${mb(heap0)} → ${mb(heap1)} MB, ` +
        `RSS ${mb(rss0)} → ${mb(rss1)} MB, index ${blocks} blocks, active ${active}`,
    );
    assert.equal(report.errors, 0, report.firstError);
    assert.ok(report.requests > 0 && report.events > 0);
    assert.equal(active, 0, "every routed request was freed");
    assert.ok(blocks <= 8 * 2000, `index holds ${blocks} blocks, the fleet at most 16000`);
    assert.ok(heap1 - heap0 < HEAP_GROWTH_BOUND_MB * 2 ** 20, `heap grew ${mb(heap1 - heap0)} MB`);
    const client = new KvRouterClient(router.grpcAddress);
    try {
      const workers = (await client.listWorkers()).workers;
      assert.equal(workers.length, 8);
      assert.ok(workers.every((w) => w.activeRequests === 0n && w.activePrefillTokens === 0n && w.activeDecodeBlocks === 0n));
    } finally {
      client.close();
    }
  });
});
