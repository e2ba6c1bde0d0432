// The servers the gRPC ingest benchmarks drive, each in a process of its own
// (so the client's work does not share the server's thread), started as
//   node --import tsx bench/ingestServers.ts floor|floor-64k|naive|router [indexShards|defaults] [ingestThreads] [wait|decoded|asked] [--max-blocks=N]
// ("defaults": index shards and ingest threads as the CLI picks them for this machine's cores)
// ("wait": index shards apply each ingest batch before the next is decoded, the baseline of queued applies)
// Each prints "PORT <n>" once serving and exits when its stdin closes.
// - floor:  a bare grpc-js server answering IngestKvEvents with an identity
//           deserializer: it receives the same bytes and only counts them,
//           with the HTTP/2 receive windows kv-router sets (4 MiB);
// - floor-64k: the same with grpc-js's own 64 KB windows.
// - naive:  a ~50-line stub (proto-loader objects, a Map of sequence hashes).
// - router: kv-router itself (startServer, as the CLI runs it).
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { xxh3 } from "@node-rs/xxhash";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { KV_HASH_SEED, sequenceHash } from "../src/hashing/blockHash.js";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { DEFAULT_FLOW_CONTROL_WINDOW, HTTP2_DEFAULT_WINDOW, raiseReceiveWindows } from "../src/server/flowControl.js";
import { type ServerOptions, startServer } from "../src/app/startServer.js";
import { defaultIndexerShards, defaultIngestThreads } from "../src/cli/options.js";
import { BLOCK } from "./workload.js";

export const INGEST_PATH = "/kvrouter.v1.KvRouterService/IngestKvEvents";
const MAX_MESSAGE = 64 * 1024 * 1024;
const PROTO = fileURLToPath(new URL("../proto/kvrouter/v1/router.proto", import.meta.url));

const identity = (b: Buffer) => b;
/** IngestKvEvents with bytes in and out, no decoding: the floor's server and every benchmark client. */
export const RAW_INGEST = {
  ingestKvEvents: {
    path: INGEST_PATH,
    requestStream: true,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

async function bind(server: grpc.Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
}

/** Receives the bytes, counts them, answers with an empty response; `window`: HTTP/2 receive windows as kv-router raises them. */
async function floor(window: number): Promise<number> {
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_MESSAGE });
  let bytes = 0;
  server.addService(RAW_INGEST, {
    ingestKvEvents: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      call.on("data", (b: Buffer) => (bytes += b.length));
      call.on("end", () => cb(null, Buffer.alloc(0)));
    },
  });
  const port = await bind(server);
  raiseReceiveWindows(server, window);
  return port;
}

interface NaiveBlock { blockHash: string; tokenIds: number[]; tokensHash?: string }
interface NaiveEvent { workerId: string; dpRank: number; stored?: { parentBlockHash?: string; blocks: NaiveBlock[] } }

/** The naive stub: decoded objects, one native hash call and one bigint per block, string-keyed Maps. */
async function naive(): Promise<number> {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(PROTO, { longs: String, defaults: false })) as any;
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_MESSAGE });
  const holders = new Map<bigint, Set<string>>();
  const seqOf = new Map<string, bigint>();
  let applied = 0;
  server.addService(pkg.kvrouter.v1.KvRouterService.service, {
    ingestKvEvents: (call: grpc.ServerReadableStream<{ events: NaiveEvent[] }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      call.on("data", (req: { events: NaiveEvent[] }) => {
        for (const e of req.events) {
          if (!e.stored) continue;
          const worker = `${e.workerId}:${e.dpRank}`;
          let parent = e.stored.parentBlockHash === undefined ? undefined : seqOf.get(`${worker}:${e.stored.parentBlockHash}`);
          for (const b of e.stored.blocks) {
            const local = b.tokensHash !== undefined ? BigInt(b.tokensHash) : xxh3.xxh64(Buffer.from(Uint32Array.from(b.tokenIds).buffer), KV_HASH_SEED);
            const seq = sequenceHash(parent, local);
            seqOf.set(`${worker}:${b.blockHash}`, seq);
            let set = holders.get(seq);
            if (set === undefined) holders.set(seq, (set = new Set()));
            set.add(worker);
            parent = seq;
          }
          applied++;
        }
      });
      call.on("end", () => cb(null, { applied: String(applied) }));
    },
  });
  return bind(server);
}

/** kv-router as every benchmark runs it: the bench's block size, loopback, a seeded tie-break; `opts` on top. */
export function startBenchRouter(opts: Partial<Omit<ServerOptions, "router">> = {}) {
  return startServer({
    router: { ...DEFAULT_ROUTER_CONFIG, blockSize: BLOCK },
    host: "127.0.0.1",
    grpcPort: 0,
    maxTokens: 1 << 20,
    seed: 1,
    processMetrics: false,
    ...opts,
  });
}

/**
 * `applies`: "wait" (each batch waits for the shards), "decoded" (queued, decoded on the main thread), else raw
 * messages to the shards; "asked": as the default, but queries ask the shard threads instead of reading their memory.
 */
async function router(indexerShards: number, ingestThreads: number, applies: string | undefined, maxBlocks: number | undefined): Promise<number> {
  return (
    await startBenchRouter({
      indexerShards,
      ingestThreads,
      maxBlocks,
      pipelineIngest: applies !== "wait",
      rawIngest: applies !== "decoded",
      indexSharedReads: applies === "asked" ? false : undefined,
    })
  ).grpcPort;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  // Options (--max-blocks=N) may stand anywhere; the rest are positional.
  const argv = process.argv.slice(2);
  const maxBlocksArg = argv.find((a) => a.startsWith("--max-blocks="));
  const maxBlocks = maxBlocksArg === undefined ? undefined : Number(maxBlocksArg.slice("--max-blocks=".length));
  if (maxBlocks !== undefined && !(Number.isInteger(maxBlocks) && maxBlocks > 0)) throw new Error(`bench server: bad ${maxBlocksArg}`);
  const [kind, shards, threads, applies] = argv.filter((a) => !a.startsWith("--"));
  const servers: Record<string, () => Promise<number>> = {
    floor: () => floor(DEFAULT_FLOW_CONTROL_WINDOW),
    "floor-64k": () => floor(HTTP2_DEFAULT_WINDOW),
    naive,
  };
  const cores = availableParallelism();
  const [nShards, nThreads] = shards === "defaults" ? [defaultIndexerShards(cores), defaultIngestThreads(cores)] : [Number(shards ?? 0), Number(threads ?? 0)];
  const port = await (servers[kind] ?? (() => router(nShards, nThreads, applies, maxBlocks)))();
  process.stdout.write(`PORT ${port}\n`);
  process.stdin.resume();
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("close", () => process.exit(0));
}
