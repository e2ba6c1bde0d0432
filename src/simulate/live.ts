// --live: the same simulated engines, run on the wall clock, routed by a
// kv-router process over gRPC. The engines register as workers and publish
// their KV events through IngestKvEvents, as a real worker would; each
// request is routed with FindBestWorker (restricted to the simulated
// workers) and released with MarkPrefillCompleted and Free.
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { KvEventSchema } from "../../gen/kvrouter/v1/router_pb.js";
import { KvRouterClient } from "../client/kvRouterClient.js";
import type { IndexEvent } from "../protocols/events.js";
import type { RequestRecord } from "./engine.js";
import { summarize } from "./metrics.js";
import type { Dispatch, Policy } from "./policies.js";
import { PolicyFleet, type SimOptions, type SimResult, prepareRequest, validateOptions } from "./run.js";
import type { TraceRequest } from "./trace.js";

export interface LiveOptions extends SimOptions {
  /** host:port of the running kv-router. */
  address: string;
  /** Worker ids used are base+1 .. base+workers (must not clash with real workers). */
  workerIdBase: number;
}

type WireEvent = MessageInitShape<typeof KvEventSchema>;

function toWire(e: IndexEvent, workerId: bigint): WireEvent {
  const head = { workerId, dpRank: e.dpRank, eventId: e.eventId };
  switch (e.kind) {
    case "stored":
      return {
        ...head,
        data: {
          case: "stored",
          value: {
            parentBlockHash: e.parentHash,
            blocks: e.blocks.map((b) => ({ blockHash: b.externalHash, tokensHash: b.localHash })),
          },
        },
      };
    case "removed":
      return { ...head, data: { case: "removed", value: { blockHashes: e.blockHashes } } };
    case "cleared":
      return { ...head, data: { case: "cleared", value: {} } };
  }
}

/** Collects what the engines tell the router, to send it in order between routing calls. */
class LivePolicy implements Policy {
  readonly name = "kv-live";
  events: WireEvent[] = [];
  prefillDone: string[] = [];
  finished: string[] = [];
  rejectedEvents = 0;
  routingErrors = 0;
  predicted = 0;

  constructor(private readonly workerIdBase: number) {}

  choose(): Dispatch {
    throw new Error("live routing is asynchronous");
  }
  onEvents(worker: number, events: IndexEvent[]): void {
    const id = BigInt(this.workerIdBase + worker + 1);
    for (const e of events) this.events.push(toWire(e, id));
  }
  onPrefillDone(record: RequestRecord): void {
    this.prefillDone.push(record.request.id);
  }
  onFinished(record: RequestRecord): void {
    this.finished.push(record.request.id);
  }
  tick(): void {}
  extras(): Record<string, number> {
    return { rejected_events: this.rejectedEvents, routing_errors: this.routingErrors, predicted_hit_blocks: this.predicted };
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Once a second: the lease's keep-alive and the batch report (Dynamo's forward-pass metrics heartbeat is 1 s). */
const KEEPALIVE_MS = 1000;
const LEASE_S = 10;

export async function simulateLive(
  trace: readonly TraceRequest[],
  opts: LiveOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<SimResult> {
  validateOptions(opts);
  const requests = opts.maxRequests !== undefined ? trace.slice(0, opts.maxRequests) : trace;
  const client = new KvRouterClient(opts.address);
  const policy = new LivePolicy(opts.workerIdBase);
  const fleet = new PolicyFleet(policy, opts.workers, opts.engine);
  const ids = fleet.engines.map((_, i) => BigInt(opts.workerIdBase + i + 1));
  const allowed = ids.map((workerId) => ({ workerId, dpRank: 0 }));
  let keepAlive: NodeJS.Timeout | undefined;
  const runTag = `sim${process.pid}-${Date.now().toString(36)}`;

  // Sends what the engines produced so far: events first (they change the index), then load updates.
  const flush = async () => {
    if (policy.events.length > 0) {
      const events = policy.events;
      policy.events = [];
      const res = await client.sendEvents(events);
      policy.rejectedEvents += Number(res.rejected);
    }
    const done = policy.prefillDone;
    const finished = policy.finished;
    policy.prefillDone = [];
    policy.finished = [];
    await Promise.all([...done.map((id) => client.markPrefillCompleted(id)), ...finished.map((id) => client.free(id))]);
  };

  try {
    for (const id of ids) {
      // The engine's sizes, as a vLLM worker reports them: policies read the step budget and the KV cache size.
      const sizes = {
        maxNumBatchedTokens: BigInt(opts.engine.maxNumBatchedTokens ?? 0),
        totalKvBlocks: BigInt(Number.isFinite(opts.engine.kvBlocks) ? opts.engine.kvBlocks : 0),
        maxNumSeqs: BigInt(opts.engine.maxBatch),
      };
      await client.registerWorker({ workerId: id, dpRanks: [0], leaseTtlSeconds: LEASE_S, ...sizes }).catch((err: unknown) => {
        throw new Error(`cannot register simulated workers with the kv-router at ${opts.address}: ${(err as Error).message}`);
      });
    }
    // Each keep-alive carries the engine's batch (running, waiting), as a worker relays its forward-pass metrics.
    keepAlive = setInterval(() => {
      ids.forEach((id, i) => {
        const e = fleet.engines[i];
        client.keepAlive(id, [{ dpRank: 0, running: e.running, waiting: e.waiting }]).catch(() => {});
      });
    }, KEEPALIVE_MS);
    const start = performance.now();
    const now = () => performance.now() - start;
    const sampleMs = opts.sampleMs ?? Math.max(100, (requests.at(-1)?.timestampMs ?? 0) / opts.speedup / 300);
    let nextSample = 0;
    const step = async () => {
      const t = now();
      fleet.advanceTo(t);
      while (nextSample <= t) {
        fleet.sample(nextSample);
        nextSample += sampleMs;
      }
      await flush();
    };

    for (let i = 0; i < requests.length; i++) {
      const tr = requests[i];
      const req = prepareRequest(tr, opts.engine.blockSize, opts.speedup, `${runTag}-r${tr.index}`, opts.traceBlockSize);
      for (;;) {
        await step();
        const wait = req.arrivalMs - now();
        if (wait <= 0) break;
        await sleep(Math.min(wait, 20));
      }
      try {
        const res = await client.findBestWorker({ tokenIds: Array.from(req.tokens), requestId: req.id, allowedWorkers: allowed });
        const worker = Number((res.worker?.workerId ?? 0n) - BigInt(opts.workerIdBase)) - 1;
        if (!(worker >= 0 && worker < opts.workers)) throw new Error(`router chose worker ${res.worker?.workerId}, not one of ours`);
        policy.predicted += res.overlapBlocks;
        const at = now();
        fleet.advanceTo(at);
        // The routing call's latency counts towards this request's TTFT.
        fleet.engines[worker].enqueue(req, at);
      } catch (err) {
        policy.routingErrors++;
        if (policy.routingErrors === 1) process.stderr.write(`simulate --live: FindBestWorker failed: ${String(err)}\n`);
      }
      onProgress?.(i + 1, requests.length);
    }
    while (!fleet.idle) {
      await step();
      await sleep(10);
    }
    await step();
  } finally {
    if (keepAlive) clearInterval(keepAlive);
    for (const id of ids) await client.deregisterWorker(id).catch(() => {});
    client.close();
  }

  const records = fleet.records;
  return {
    config: { mode: "live", address: opts.address, requests: requests.length, workers: opts.workers, speedup: opts.speedup, engine: { ...opts.engine } },
    policies: [
      {
        result: summarize("kv-live", records, fleet.rejected, opts.engine.blockSize, fleet.load, opts.workers, policy.extras()),
        records,
        load: fleet.load,
      },
    ],
  };
}
