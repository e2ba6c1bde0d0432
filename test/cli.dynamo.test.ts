// kv-router started from Dynamo's own router command lines: the exact argument
// lists of `python -m dynamo.router ...` in Dynamo's docs (cited per case), its
// DYN_* variables and NATS_SERVER. The real CLI is spawned; it must serve, with
// exactly one warning per Dynamo setting it accepts but does not support yet.
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { type RouterProcess, spawnCli, spawnRouter } from "./support/cliProcess.js";
import { type NatsCluster, startNats } from "./support/natsServer.js";
import { waitFor } from "./support/wait.js";

const SERVE = ["--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"];
const NOT_SUPPORTED = /^(\S+) is a Dynamo router setting kv-router accepts but does not support yet; it has no effect/;

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

const logLines = (stderr: string): LogLine[] =>
  stderr
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as LogLine);

/** Starts the CLI, waits for its start-up log; returns it with the flags named by not-supported warnings. */
async function start(args: string[], env: NodeJS.ProcessEnv = {}) {
  const router = await spawnRouter([...args, ...SERVE], env);
  routers.push(router);
  await waitFor(() => logLines(router.stderr()).some((l) => l.msg === "kv-router started"), "start-up log", 60_000);
  const lines = logLines(router.stderr());
  const started = lines.find((l) => l.msg === "kv-router started")!;
  const notSupported = lines.filter((l) => l.level === "warn").flatMap((l) => NOT_SUPPORTED.exec(l.msg)?.[1] ?? []);
  const warnings = lines.filter((l) => l.level === "warn").map((l) => l.msg);
  return { router, started, notSupported, warnings };
}

const routers: RouterProcess[] = [];
after(async () => {
  await Promise.all(routers.map((r) => r.stop()));
});

// `python -m dynamo.router` argument lists, verbatim from Dynamo's docs, and the
// settings among them kv-router does not support yet.
const DYNAMO_DOC_COMMANDS: { source: string; args: string[]; notSupported: string[]; blockSize: number }[] = [
  {
    source: "docs/fern/pages/cli/kv-aware-routing/standalone-router.md, Start the router",
    args: ["--endpoint", "dynamo.prefill.generate", "--router-block-size", "64", "--no-router-track-active-blocks"],
    notSupported: [],
    blockSize: 64,
  },
  {
    source: "docs/fern/pages/cli/kv-aware-routing/standalone-router.md, Runtime client example",
    args: ["--endpoint", "dynamo.backend.generate", "--router-block-size", "64"],
    notSupported: [],
    blockSize: 64,
  },
  {
    source: "components/src/dynamo/router/README.md, Command Line",
    args: ["--endpoint", "dynamo.prefill.generate", "--router-block-size", "64", "--router-reset-states", "--no-router-track-active-blocks"],
    notSupported: [],
    blockSize: 64,
  },
  {
    source: "docs/components/router/README.md (older releases), Standalone Router",
    args: ["--endpoint", "dynamo.prefill.generate", "--block-size", "64", "--router-reset-states", "--no-track-active-blocks"],
    notSupported: [],
    blockSize: 64,
  },
  {
    source: "examples/.../disagg_router.sh (older releases): no block size, so Dynamo's default 128",
    args: ["--endpoint", "dynamo.prefill.generate", "--router-reset-states", "--no-track-active-blocks"],
    notSupported: [],
    blockSize: 128,
  },
  {
    source: "docs/.../router/configuration-and-tuning.md, AIC Prefill Load Model (standalone router)",
    args: [
      "--endpoint",
      "dynamo.prefill.generate",
      "--router-prefill-load-model",
      "aic",
      "--aic-backend",
      "vllm",
      "--aic-system",
      "h200_sxm",
      "--aic-model-path",
      "nvidia/Llama-3.1-8B-Instruct-FP8",
    ],
    notSupported: ["--router-prefill-load-model", "--aic-backend", "--aic-system", "--aic-model-path"],
    blockSize: 128,
  },
];

describe("kv-router from Dynamo's router command lines", () => {
  for (const c of DYNAMO_DOC_COMMANDS) {
    it(`serves: ${c.args.join(" ")}  (${c.source})`, async () => {
      const { router, started, notSupported, warnings } = await start(c.args);
      assert.deepEqual(notSupported, c.notSupported, "one warning per setting not supported yet, naming it");
      assert.equal(started.block_size, c.blockSize);
      const defaulted = warnings.filter((w) => /no --block-size given: using Dynamo's default 128/.test(w));
      assert.equal(defaulted.length, c.args.some((a) => /block-size/.test(a)) ? 0 : 1, "says when the block size is Dynamo's default");
      const client = new KvRouterClient(router.grpcAddress);
      try {
        await client.registerWorker({ workerId: 1n });
        const d = await client.findBestWorker({ tokenIds: Array.from({ length: 2 * c.blockSize }, (_, i) => i) });
        assert.equal(d.worker!.workerId, 1n);
        assert.equal(d.promptBlocks, 2);
      } finally {
        client.close();
      }
      assert.equal(await router.stop(), 0);
    });
  }

  it("reads Dynamo's DYN_* router variables: implemented ones take effect, the others warn naming the variable", async () => {
    const { router, started, notSupported } = await start(["--block-size", "16"], {
      DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT: "0.5",
      DYN_ROUTER_KV_OVERLAP_SCORE_CREDIT_DECAY: "2",
      DYN_ROUTER_PREFILL_LOAD_SCALE: "3",
      DYN_ROUTER_DECODE_ACTIVE_REQUEST_WEIGHT: "4",
      DYN_ROUTER_QUEUE_POLICY: "wspt",
      DYN_ROUTER_TRACK_OUTPUT_BLOCKS: "true",
      DYN_ROUTER_APPROXIMATE_CACHE_POLICY: "ttl",
      DYN_ROUTER_CONDITIONAL_DISAGG: "true",
      DYN_AIS_SYSTEM: "h200_sxm",
    });
    assert.deepEqual(
      [started.overlap_score_credit, started.overlap_score_credit_decay, started.prefill_load_scale, started.decode_active_request_weight],
      [0.5, 2, 3, 4],
    );
    assert.deepEqual(
      [...notSupported].sort(),
      // DYN_ROUTER_QUEUE_POLICY, _APPROXIMATE_CACHE_POLICY and _CONDITIONAL_DISAGG are implemented, so they do not warn.
      ["DYN_AIS_SYSTEM", "DYN_ROUTER_TRACK_OUTPUT_BLOCKS"],
    );
    assert.equal(await router.stop(), 0);
  });

  it("maps the deprecated --kv-overlap-score-weight as Dynamo does, with a deprecation warning", async () => {
    const [zero, two] = await Promise.all([
      start(["--block-size", "16", "--kv-overlap-score-weight", "0"]),
      start(["--block-size", "16", "--router-kv-overlap-score-weight", "2", "--router-prefill-load-scale", "5"]),
    ]);
    assert.deepEqual([zero.started.prefill_load_scale, zero.started.overlap_score_credit], [0, 0], "0: pure load balancing");
    assert.deepEqual([two.started.prefill_load_scale, two.started.overlap_score_credit], [2, 1], "the deprecated weight wins over the scale");
    assert.equal(zero.warnings.filter((w) => /--kv-overlap-score-weight is deprecated/.test(w)).length, 1);
    assert.equal(two.warnings.filter((w) => /--router-kv-overlap-score-weight is deprecated/.test(w)).length, 1);
    assert.deepEqual(await Promise.all([zero.router.stop(), two.router.stop()]), [0, 0]);
  });

  it("--agentic and DYN_ROUTER_AGENTIC apply Dynamo's agentic preset (router-presets.md)", async () => {
    const runs = await Promise.all([start(["--block-size", "16", "--agentic"]), start(["--block-size", "16"], { DYN_ROUTER_AGENTIC: "true" })]);
    for (const { started, notSupported } of runs) {
      assert.deepEqual([started.overlap_score_credit, started.prefill_load_scale, started.decode_active_request_weight], [2, 4, 64]);
      assert.deepEqual(notSupported, []);
    }
    assert.deepEqual(await Promise.all(runs.map((r) => r.router.stop())), [0, 0]);
  });

  it("--router-policy-config selects its two-tier instance; DYN_ROUTER_WORKER_SELECTION_POLICY=default overrides it, as in Dynamo", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kv-router-policy-"));
    const path = join(dir, "worker-selection.yaml");
    // configuration-and-tuning.md, "Worker-Selection Policies" (the aggregated stage: kv-router routes one pool).
    writeFileSync(path, "worker_selection:\n  aggregated: dynamo-two-tier-cost-fn\n  instances:\n    - name: dynamo-two-tier-cost-fn\n      type: dynamo-two-tier-cost-fn\n");
    const args = ["--block-size", "4", "--router-policy-config", path, "--router-session-affinity-ttl-secs", "60", "--router-session-affinity-mode", "soft"];
    const runs = await Promise.all([start(args), start(args, { DYN_ROUTER_WORKER_SELECTION_POLICY: "default" })]);
    const chosen: string[] = [];
    for (const { router, started, notSupported } of runs) {
      assert.deepEqual(notSupported, [], "--router-policy-config is implemented now");
      const client = new KvRouterClient(router.grpcAddress);
      try {
        await client.registerWorker({ workerId: 1n });
        const d = await client.findBestWorker({ tokenIds: [0, 1, 2, 3, 4, 5, 6, 7], sessionId: "s" });
        assert.equal(d.workerSelectionPolicy, started.worker_selection_policy);
        chosen.push(d.workerSelectionPolicy);
      } finally {
        client.close();
      }
    }
    assert.deepEqual(chosen, ["dynamo-two-tier-cost-fn", "default"]);
    assert.deepEqual(await Promise.all(runs.map((r) => r.router.stop())), [0, 0]);
  });

  it("a policy YAML Dynamo would refuse stops start-up: one line naming the key and the file, exit code 2", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "kv-router-policy-")), "bad.yaml");
    writeFileSync(path, "worker_selection:\n  instances:\n    - name: a\n      type: dynamo-two-tier-cost-fn\n      parameters: {cache_treshold: 0.5}\n");
    const run = spawnCli(["--block-size", "16", "--router-policy-config", path, "--grpc-port", "0", "--metrics-port", "-1"]);
    assert.equal(await run.exited, 2);
    assert.equal(
      run.out.stderr.trim(),
      `kv-router: --router-policy-config ${path}: worker_selection.instances[0].parameters: unknown parameter "cache_treshold"; ` +
        "dynamo-two-tier-cost-fn takes cache_threshold, cache_threshold_inclusive, balance_abs_threshold, balance_rel_threshold, host_cache_weight",
    );
  });

  it("refuses a value Dynamo refuses too (an unknown choice), naming the flag", async () => {
    await assert.rejects(start(["--router-queue-policy", "lifo"]), /router-queue-policy/);
  });

  describe("with a real nats-server", () => {
    let nats: NatsCluster;
    before(async () => {
      nats = await startNats();
    });
    after(async () => {
      await nats?.stop();
    });

    it("NATS_SERVER selects NATS mode like --nats-url (Dynamo's variable, lib/runtime/src/transports/nats.rs)", async () => {
      const { router } = await start(["--router-block-size", "16", "--endpoint", "natsenv.backend.generate"], { NATS_SERVER: nats.urls });
      assert.ok(
        logLines(router.stderr()).some((l) => l.msg === "event source started" && l.source === "nats"),
        "the NATS event source runs",
      );
      assert.equal(await router.stop(), 0);
    });
  });
});
