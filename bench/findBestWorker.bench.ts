// End-to-end FindBestWorker over real gRPC on loopback, next to a bare
// grpc-js echo server answering the same method with the same payload in the
// same run: router latency / echo latency is the router's own overhead.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type FindBestWorkerRequest,
  FindBestWorkerRequestSchema,
  type FindBestWorkerResponse,
  FindBestWorkerResponseSchema,
} from "../gen/kvrouter/v1/router_pb.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { startBenchRouter } from "./ingestServers.js";
import { type Latency, latency, median, usSince } from "./stats.js";
import type { Workload } from "./workload.js";

export interface E2eConfig {
  calls: number;
  concurrency: number;
  rounds: number;
  /** Index shard threads of the router variants to measure (0 = main thread). */
  shardVariants: number[];
  /**
   * Also measure the first variant with prompts decoded into a token array
   * that the router hashes (hashOnDecode off): the baseline of hashing as
   * the request is decoded.
   */
  decodeBaseline?: boolean;
}

type Call = (req: FindBestWorkerRequest) => Promise<unknown>;

const ECHO_PATH = "/kvrouter.bench.EchoService/FindBestWorker";
const echoMethod = {
  path: ECHO_PATH,
  requestStream: false,
  responseStream: false,
  requestSerialize: (m: FindBestWorkerRequest) => Buffer.from(toBinary(FindBestWorkerRequestSchema, m)),
  requestDeserialize: (b: Buffer) => fromBinary(FindBestWorkerRequestSchema, b),
  responseSerialize: (m: FindBestWorkerResponse) => Buffer.from(toBinary(FindBestWorkerResponseSchema, m)),
  responseDeserialize: (b: Buffer) => fromBinary(FindBestWorkerResponseSchema, b),
};
const echoService = { findBestWorker: echoMethod };

/** A grpc-js server that decodes the request and returns a fixed response: the floor. */
async function startEcho(reply: FindBestWorkerResponse): Promise<{ call: Call; stop(): Promise<void> }> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": 64 * 1024 * 1024 });
  server.addService(echoService, {
    findBestWorker: (call: grpc.ServerUnaryCall<FindBestWorkerRequest, FindBestWorkerResponse>, cb: grpc.sendUnaryData<FindBestWorkerResponse>) => {
      // Touch the payload as the router would have to, so the floor decodes the same bytes.
      if (call.request.tokenIds.length === 0) return cb({ code: grpc.status.INVALID_ARGUMENT });
      cb(null, reply);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const Client = grpc.makeGenericClientConstructor(echoService, "EchoService");
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { "grpc.max_send_message_length": 64 * 1024 * 1024 });
  const call: Call = (req) =>
    new Promise((resolve, reject) =>
      (client as unknown as Record<string, Function>).findBestWorker(req, (e: Error | null, r: unknown) => (e ? reject(e) : resolve(r))),
    );
  return {
    call,
    async stop() {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}

interface Run {
  callsPerSec: number;
  latencyUs: Latency;
}

async function measure(call: Call, reqs: FindBestWorkerRequest[], calls: number, concurrency: number): Promise<Run> {
  const samples: number[] = [];
  let next = 0;
  const t0 = process.hrtime.bigint();
  const lane = async () => {
    while (next < calls) {
      const req = reqs[next++ % reqs.length];
      const t = process.hrtime.bigint();
      await call(req);
      samples.push(usSince(t));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  return { callsPerSec: calls / (usSince(t0) / 1e6), latencyUs: latency(samples) };
}

function medianRun(runs: Run[]): Run {
  return {
    callsPerSec: median(runs.map((r) => r.callsPerSec)),
    latencyUs: {
      p50: median(runs.map((r) => r.latencyUs.p50)),
      p99: median(runs.map((r) => r.latencyUs.p99)),
      max: Math.max(...runs.map((r) => r.latencyUs.max)),
    },
  };
}

export async function runE2eBench(w: Workload, cfg: E2eConfig) {
  const reqs = w.prompts(4096, 256).map((p) => create(FindBestWorkerRequestSchema, { tokenIds: Array.from(p) }));
  const routers = [];
  const variants = cfg.shardVariants.map((shards) => ({ shards, hashOnDecode: true }));
  if (cfg.decodeBaseline) variants.push({ shards: cfg.shardVariants[0], hashOnDecode: false });
  for (const { shards, hashOnDecode } of variants) {
    const server = await startBenchRouter({ indexerShards: shards, hashOnDecode });
    for (let i = 0; i < w.events.length; i += 64) server.router.applyEvents(w.events.slice(i, i + 64));
    const client = new KvRouterClient(`127.0.0.1:${server.grpcPort}`);
    const name = shards === 0 ? "router (index in main thread)" : `router (${shards} index shard thread${shards > 1 ? "s" : ""})`;
    routers.push({ name: hashOnDecode ? name : `${name}, tokens decoded into an array`, server, client });
  }
  const sample = await routers[0].client.findBestWorker({ tokenIds: reqs[0].tokenIds });
  const echo = await startEcho(sample);

  const modes = [
    { mode: "sequential", concurrency: 1 },
    { mode: `concurrent-${cfg.concurrency}`, concurrency: cfg.concurrency },
  ];
  const targets: { name: string; call: Call }[] = [
    { name: "echo", call: echo.call },
    // The router's own client, called with the same prebuilt message as the echo (no per-call copy).
    ...routers.map((r) => ({
      name: r.name,
      call: (req: FindBestWorkerRequest) =>
        new Promise((resolve, reject) =>
          (r.client.raw as unknown as Record<string, Function>).findBestWorker(req, (e: Error | null, res: unknown) => (e ? reject(e) : resolve(res))),
        ),
    })),
  ];
  const runs = new Map<string, Run[]>();
  // Warm up every target, then alternate them round by round so drift hits all alike.
  for (const t of targets) await measure(t.call, reqs, Math.min(200, cfg.calls), 4);
  for (let round = 0; round < cfg.rounds; round++) {
    for (const m of modes) {
      for (const t of targets) {
        const key = `${m.mode}|${t.name}`;
        runs.set(key, [...(runs.get(key) ?? []), await measure(t.call, reqs, cfg.calls, m.concurrency)]);
      }
    }
  }
  const out: Record<string, unknown> = { promptTokens: 4096, indexedEntries: w.storedBlocks, workload: w.name };
  for (const m of modes) {
    const echoRun = medianRun(runs.get(`${m.mode}|echo`)!);
    const row: Record<string, unknown> = { echo: echoRun };
    for (const r of routers) {
      const run = medianRun(runs.get(`${m.mode}|${r.name}`)!);
      row[r.name] = {
        ...run,
        p50VsEcho: run.latencyUs.p50 / echoRun.latencyUs.p50,
        p99VsEcho: run.latencyUs.p99 / echoRun.latencyUs.p99,
        throughputVsEcho: run.callsPerSec / echoRun.callsPerSec,
      };
    }
    out[m.mode] = row;
  }
  await echo.stop();
  for (const r of routers) {
    r.client.close();
    await r.server.stop();
  }
  return out;
}
