// A Python client (stubs generated at test time by Debian's protoc and
// grpc_python_plugin from proto/) drives a real router; the decisions it gets
// must be the ones its events imply, and the TypeScript client must see the
// same state afterwards.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { hashPrompt } from "../src/hashing/blockHash.js";
import { DEFAULT_ROUTER_CONFIG } from "../src/router/types.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = "/usr/bin/python3"; // Debian's, which sees python3-grpcio (the pyenv python3 on PATH does not)
const B = 16;
const W3 = (1n << 64n) - 1000n;

// Shapes of google.protobuf.json_format.MessageToDict output (u64 as strings).
interface Ref {
  worker_id: string;
  dp_rank: number;
}
interface Score {
  worker: Ref;
  overlap_blocks: number;
  prefill_blocks: number;
  decode_blocks: string;
  logit: number;
}
interface Decision {
  worker: Ref;
  overlap_blocks: number;
  prompt_blocks: number;
  scores: Score[];
}
interface Info {
  worker: Ref;
  registered: boolean;
  lease_remaining_ms: string;
  cached_blocks: string;
  active_requests: string;
  active_prefill_tokens: string;
  active_decode_blocks: string;
  last_event_id: string;
  address: string;
  host_cached_blocks: string;
  disk_cached_blocks: string;
  external_cached_blocks: string;
  prefill_tokens_per_second: number;
}
interface Status {
  code: string;
  details: string;
}
interface PythonRun {
  block_size: number;
  prompts: { a: number[]; b: number[] };
  register: { lease_ttl_seconds: number }[];
  ingest: { applied: string; rejected: string; rejections: { worker: Ref; event_id: string; reason: string }[] };
  route_a: Decision;
  route_b: Decision;
  workers_routed: Info[];
  prefill_a: { found: boolean };
  workers_prefilled: Info[];
  free: { found: boolean }[];
  workers_freed: Info[];
  invalid: { empty_prompt: Status; short_block: Status };
  route_b_again: Decision;
}

const key = (r: Ref) => `${r.worker_id}/${r.dp_rank}`;
const byWorker = (infos: Info[]) => new Map(infos.map((i) => [key(i.worker), i]));

describe("Python gRPC client (protoc + grpc_python_plugin stubs)", () => {
  let stubDir: string;
  let r: TestRouter;
  let py: PythonRun;

  before(async () => {
    stubDir = mkdtempSync(join(tmpdir(), "kvrouter-pystubs-"));
    execFileSync(
      "protoc",
      ["-I", "proto", `--python_out=${stubDir}`, `--grpc_out=${stubDir}`, "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin", "kvrouter/v1/router.proto"],
      { cwd: REPO },
    );
    r = await startTestRouter({ blockSize: B });
    // Asynchronous: the router serves from this same event loop while Python runs.
    const { stdout } = await promisify(execFile)(PYTHON, ["test/python/kvrouter_client.py", r.address, stubDir, String(B)], {
      cwd: REPO,
      timeout: 20_000,
    });
    py = JSON.parse(stdout) as PythonRun;
  });

  after(async () => {
    await r?.close();
    if (stubDir) rmSync(stubDir, { recursive: true, force: true });
  });

  it("registers workers with the default or requested lease", () => {
    const defaultTtl = DEFAULT_ROUTER_CONFIG.workerLeaseTtlMs / 1000;
    assert.deepEqual(
      py.register.map((x) => x.lease_ttl_seconds),
      [defaultTtl, defaultTtl, 60],
    );
  });

  it("streams events over one client-streaming call: orphan and stale events are rejected with reasons", () => {
    assert.equal(py.ingest.applied, "5");
    assert.equal(py.ingest.rejected, "2");
    assert.deepEqual(
      py.ingest.rejections.map((x) => [key(x.worker), x.event_id, x.reason]),
      [
        ["1/0", "3", "parent_block_not_found"],
        ["2/0", "1", "stale_event_id"],
      ],
    );
  });

  it("routes prompt A to the worker holding its whole prefix, with every candidate explained", () => {
    const d = py.route_a;
    assert.equal(d.prompt_blocks, Math.floor(py.prompts.a.length / B));
    assert.deepEqual(d.worker, { worker_id: "1", dp_rank: 0 });
    assert.equal(d.overlap_blocks, 6);
    // Overlaps the events imply: W1 all 6 blocks, W2 block 0 only (block 1 removed), W3 none of A.
    const overlaps = Object.fromEntries(d.scores.map((s) => [key(s.worker), s.overlap_blocks]));
    assert.deepEqual(overlaps, { "1/0": 6, "2/0": 1, [`${W3}/0`]: 0, [`${W3}/1`]: 0 });
    assert.deepEqual(d.scores[0].worker, d.worker, "best first");
    for (let i = 1; i < d.scores.length; i++) assert.ok(d.scores[i - 1].logit <= d.scores[i].logit, "sorted by logit");
    for (const s of d.scores) {
      // No load yet: prefill is just the uncached part of this prompt.
      assert.equal(s.prefill_blocks, (py.prompts.a.length - s.overlap_blocks * B) / B, key(s.worker));
      assert.equal(s.logit, DEFAULT_ROUTER_CONFIG.prefillLoadScale * s.prefill_blocks + Number(s.decode_blocks), key(s.worker));
    }
  });

  it("matches blocks Python sent as tokens_hash (client-side xxhash) to the router's own hashes of prompt B", () => {
    assert.deepEqual(py.route_b.worker, { worker_id: W3.toString(), dp_rank: 1 }, "u64 worker id above 2^63 survives");
    assert.equal(py.route_b.overlap_blocks, 6);
    assert.deepEqual(py.route_b_again.worker, py.route_b.worker, "the router kept serving after the invalid calls");
    assert.equal(py.route_b_again.overlap_blocks, 6);
    assert.deepEqual(py.route_b_again.scores, [], "no explain, no scores");
  });

  it("tracks load through MarkPrefillCompleted and Free", () => {
    const routed = byWorker(py.workers_routed);
    assert.equal(routed.get("1/0")!.active_requests, "1");
    assert.equal(routed.get("1/0")!.active_prefill_tokens, String(py.prompts.a.length - 6 * B), "only the uncached tail");
    assert.equal(routed.get(`${W3}/1`)!.active_requests, "1");
    assert.equal(routed.get("2/0")!.active_requests, "0");

    assert.equal(py.prefill_a.found, true);
    const prefilled = byWorker(py.workers_prefilled).get("1/0")!;
    assert.equal(prefilled.active_requests, "1");
    assert.equal(prefilled.active_prefill_tokens, "0");

    assert.deepEqual(
      py.free.map((f) => f.found),
      [true, false, false],
      "Free is idempotent and says whether the request was active",
    );
    const freed = byWorker(py.workers_freed);
    assert.equal(freed.get("1/0")!.active_requests, "0");
    assert.equal(freed.get("1/0")!.active_decode_blocks, "0");
    assert.equal(freed.get(`${W3}/1`)!.active_requests, "1", "py-b is still active");
    assert.deepEqual(
      Object.fromEntries([...freed].map(([k, i]) => [k, i.cached_blocks])),
      { "1/0": "6", "2/0": "1", [`${W3}/0`]: "0", [`${W3}/1`]: "6" },
    );
  });

  it("gets INVALID_ARGUMENT with a precise message for malformed calls", () => {
    assert.equal(py.invalid.empty_prompt.code, "INVALID_ARGUMENT");
    assert.match(py.invalid.empty_prompt.details, /token_ids is empty/);
    assert.equal(py.invalid.short_block.code, "INVALID_ARGUMENT");
    assert.match(py.invalid.short_block.details, new RegExp(`${B - 1} token ids but the router's block size is ${B}`));
  });

  it("the TypeScript client sees the state the Python client left", async () => {
    const ts = await r.client.listWorkers();
    const tsInfos: Info[] = ts.workers.map((w) => ({
      worker: { worker_id: w.worker!.workerId.toString(), dp_rank: w.worker!.dpRank },
      registered: w.registered,
      lease_remaining_ms: "-",
      cached_blocks: w.cachedBlocks.toString(),
      active_requests: w.activeRequests.toString(),
      active_prefill_tokens: w.activePrefillTokens.toString(),
      active_decode_blocks: w.activeDecodeBlocks.toString(),
      last_event_id: w.lastEventId.toString(),
      address: w.address,
      host_cached_blocks: w.hostCachedBlocks.toString(),
      disk_cached_blocks: w.diskCachedBlocks.toString(),
      external_cached_blocks: w.externalCachedBlocks.toString(),
      prefill_tokens_per_second: w.prefillTokensPerSecond,
    }));
    const pyInfos = py.workers_freed.map((i) => ({ ...i, lease_remaining_ms: "-" }));
    const sort = (xs: Info[]) => [...xs].sort((a, b) => key(a.worker).localeCompare(key(b.worker)));
    assert.deepEqual(sort(tsInfos), sort(pyInfos));

    for (const [name, prompt] of [
      ["a", py.prompts.a],
      ["b", py.prompts.b],
    ] as const) {
      const d = await r.client.findBestWorker({ tokenIds: prompt, explain: true });
      const pyDecision = name === "a" ? py.route_a : py.route_b;
      const tsOverlaps = Object.fromEntries(d.scores.map((s) => [`${s.worker!.workerId}/${s.worker!.dpRank}`, s.overlapBlocks]));
      const pyOverlaps = Object.fromEntries(pyDecision.scores.map((s) => [key(s.worker), s.overlap_blocks]));
      assert.deepEqual(tsOverlaps, pyOverlaps, `prompt ${name}: same overlaps from both clients`);
    }

    // The blocks Python hashed itself are the router's hashes of the same tokens.
    const dump = await r.client.dumpIndex();
    const w3Hashes = dump
      .filter((e) => e.workerId === W3 && e.dpRank === 1 && e.data.case === "stored")
      .flatMap((e) => (e.data.case === "stored" ? e.data.value.blocks.map((b) => b.tokensHash) : []));
    assert.deepEqual(w3Hashes, hashPrompt(py.prompts.b, B).local);
  });
});
