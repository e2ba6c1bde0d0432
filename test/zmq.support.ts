// Test support for the ZeroMQ feed: drives test/python/vllm_publisher.py (a
// vLLM/SGLang-format publisher on real ZeroMQ sockets) through its stdin/stdout
// JSON protocol. Every process started here is killed by stop().
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("./python/vllm_publisher.py", import.meta.url));
// Debian's python sees python3-zmq and python3-msgpack; the one on PATH may not.
const PYTHON = "/usr/bin/python3";

export type PublisherFormat = "vllm-array" | "vllm-map" | "vllm-map-batch" | "sglang";

/** A hash as the publisher's JSON protocol takes it. */
export type WireHash = bigint | { bytes: string };

export interface StoredSpec {
  type: "BlockStored";
  block_hashes: WireHash[];
  parent_block_hash: WireHash | null;
  /** Token ids, or (token, next token) pairs as vLLM sends them with Eagle. */
  token_ids: number[] | number[][];
  block_size: number;
  lora_id?: number | null;
  medium?: string | null;
  lora_name?: string | null;
  extra_keys?: unknown[] | null;
  group_idx?: number | null;
  kv_cache_spec_kind?: string | null;
  cache_salt?: string | null;
}
export interface RemovedSpec {
  type: "BlockRemoved";
  block_hashes: WireHash[];
  medium?: string | null;
  group_idx?: number | null;
}
export type EventSpec = StoredSpec | RemovedSpec | { type: "AllBlocksCleared" };

export class Publisher {
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | undefined;
  endpoint = "";
  replay: string | undefined;

  private constructor(private readonly proc: ChildProcess) {
    createInterface({ input: proc.stdout! }).on("line", (line) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(line);
      } else this.lines.push(line);
    });
    proc.stderr!.on("data", (d) => process.stderr.write(`[publisher] ${d}`));
  }

  static async start(format: PublisherFormat, opts: { replay?: boolean; replayTopicFrame?: boolean; topic?: string; host?: string } = {}) {
    const args = [SCRIPT, "--format", format];
    if (opts.host !== undefined) args.push("--host", opts.host);
    if (opts.replay) args.push("--replay");
    if (opts.replayTopicFrame) args.push("--replay-topic-frame");
    if (opts.topic !== undefined) args.push("--topic", opts.topic);
    const pub = new Publisher(spawn(PYTHON, args, { stdio: ["pipe", "pipe", "pipe"] }));
    const hello = JSON.parse(await pub.next());
    pub.endpoint = hello.endpoint;
    pub.replay = hello.replay ?? undefined;
    return pub;
  }

  private next(timeoutMs = 10_000): Promise<string> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("publisher did not answer")), timeoutMs);
      this.waiter = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  async command(cmd: Record<string, unknown>): Promise<{ ok: boolean; seq?: number; error?: string }> {
    this.proc.stdin!.write(
      JSON.stringify(cmd, (_k, v) => (typeof v === "bigint" ? (v < 0n ? v.toString() : `0x${v.toString(16)}`) : v)) + "\n",
    );
    const reply = JSON.parse(await this.next());
    if (!reply.ok) throw new Error(`publisher: ${reply.error}`);
    return reply;
  }

  /** Publishes one batch; with skip it only takes a seq and goes into the replay buffer. */
  async batch(events: EventSpec[], opts: { dpRank?: number | null; skip?: boolean } = {}): Promise<number> {
    const dpRank = opts.dpRank === undefined ? 0 : opts.dpRank;
    return (await this.command({ cmd: "batch", events, dp_rank: dpRank, skip: opts.skip ?? false })).seq!;
  }

  async raw(frames: Buffer[]): Promise<void> {
    await this.command({ cmd: "raw", frames: frames.map((f) => f.toString("hex")) });
  }

  async waitSubscribed(): Promise<void> {
    await this.command({ cmd: "wait_subscribed" });
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGKILL");
    await exited;
  }
}

/** A BlockStored of consecutive blocks of `blockSize` tokens, hashes firstHash, firstHash+1, ... */
export function storedSpec(
  tokens: number[],
  blockSize: number,
  firstHash: bigint,
  opts: Partial<Omit<StoredSpec, "type" | "token_ids" | "block_size" | "block_hashes">> & { hashes?: WireHash[] } = {},
): StoredSpec {
  const n = Math.floor(tokens.length / blockSize);
  const { hashes, ...rest } = opts;
  return {
    type: "BlockStored",
    block_hashes: hashes ?? Array.from({ length: n }, (_, i) => firstHash + BigInt(i)),
    parent_block_hash: null,
    token_ids: tokens,
    block_size: blockSize,
    lora_id: null,
    medium: "GPU",
    lora_name: null,
    ...rest,
  };
}

/** Publishes arbitrary payload bytes under the publisher's next seq (a broken batch). */
export async function brokenBatch(pub: Publisher, payload: Uint8Array): Promise<number> {
  return (await pub.command({ cmd: "batch", payload_hex: Buffer.from(payload).toString("hex") })).seq!;
}
