// The defaults kv-router applies when the user sets nothing, through the real
// command-line parser: kv-router's tuned values (docs/simulation, "Tuned
// defaults"), Dynamo's with --dynamo-defaults or the --load-aware preset, and
// every explicit flag keeping Dynamo's meaning. The simulator's `kv` policy
// takes the same values. The worker-selection policy (issue 22): kv-adaptive,
// or Dynamo's cost function when the command line sets the cost, checked in the
// parser and on a spawned router over gRPC.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import yargs from "yargs";
import { serveOptions } from "../src/cli/options.js";
import { routerConfigFrom, startupWarnings } from "../src/cli/config.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS } from "../src/scheduler/defaults.js";
import { simOptionsFrom, simulateOptions } from "../src/cli/simulateCommand.js";
import { type RouterProcess, spawnRouter } from "./support/cliProcess.js";

async function routerOf(args: string[]) {
  const argv = await serveOptions(yargs(["--block-size", "16", ...args])).strict().exitProcess(false).parse();
  const r = routerConfigFrom(argv);
  return { prefillLoadScale: r.prefillLoadScale, queueThreshold: r.queueThreshold, predictedTtlSecs: (r.predictedTtlMs ?? 0) / 1000 };
}

describe("defaults when the user sets nothing", () => {
  it("kv-router's tuned values: prefill load scale 3, Dynamo's queue threshold 16, predict-on-route 2 s", async () => {
    assert.deepEqual(KV_ROUTER_DEFAULTS, { prefillLoadScale: 3, routerQueueThreshold: 16, predictedTtlSecs: 2 });
    assert.deepEqual(await routerOf([]), { prefillLoadScale: 3, queueThreshold: 16, predictedTtlSecs: 2 });
  });

  it("--dynamo-defaults and the --load-aware preset take Dynamo's values for the flags not given", async () => {
    assert.deepEqual(DYNAMO_DEFAULTS, { prefillLoadScale: 1, routerQueueThreshold: 16, predictedTtlSecs: 0, sessionAffinityMode: "hard" });
    assert.deepEqual(await routerOf(["--dynamo-defaults"]), { prefillLoadScale: 1, queueThreshold: 16, predictedTtlSecs: 0 });
    assert.deepEqual(await routerOf(["--dynamo-defaults", "--router-predicted-ttl-secs", "5"]), {
      prefillLoadScale: 1,
      queueThreshold: 16,
      predictedTtlSecs: 5,
    });
    assert.deepEqual(await routerOf(["--load-aware"]), { prefillLoadScale: 1, queueThreshold: 16, predictedTtlSecs: 0 });
  });

  it("explicit flags keep Dynamo's meaning", async () => {
    assert.equal((await routerOf(["--router-prefill-load-scale", "1"])).prefillLoadScale, 1);
    assert.equal((await routerOf(["--kv-overlap-score-weight", "1"])).prefillLoadScale, 1, "the deprecated weight still maps onto the scale");
    assert.equal((await routerOf(["--router-queue-threshold", "4"])).queueThreshold, 4);
    assert.equal((await routerOf(["--router-predicted-ttl-secs", "0"])).predictedTtlSecs, 0);
    // Dynamo predicts only with KV events.
    assert.equal((await routerOf(["--no-kv-events"])).predictedTtlSecs, 0);
  });

  it("the simulator's kv policy starts from the same values", async () => {
    const argv = await simulateOptions(yargs(["--trace", "synthetic:agentic"])).strict().exitProcess(false).parse();
    const sim = simOptionsFrom(argv);
    assert.equal(sim.router.prefillLoadScale, KV_ROUTER_DEFAULTS.prefillLoadScale);
    assert.equal((sim.router.predictedTtlMs ?? 0) / 1000, KV_ROUTER_DEFAULTS.predictedTtlSecs);
    assert.equal(sim.admission?.thresholds.routerQueueThreshold, KV_ROUTER_DEFAULTS.routerQueueThreshold);
  });
});

async function policyOf(args: string[]) {
  const argv = await serveOptions(yargs(["--block-size", "16", ...args])).strict().exitProcess(false).parse();
  return { policy: routerConfigFrom(argv).workerSelectionPolicy, warnings: startupWarnings(argv, ["--block-size", "16", ...args], {}) };
}

async function simPolicyOf(args: string[]) {
  const argv = await simulateOptions(yargs(["--trace", "synthetic:agentic", ...args])).strict().exitProcess(false).parse();
  return simOptionsFrom(argv).router.workerSelectionPolicy;
}

describe("the worker-selection policy when none is named", () => {
  it("serve and simulate: kv-adaptive", async () => {
    assert.deepEqual(await policyOf([]), { policy: "kv-adaptive", warnings: [] });
    assert.equal(await simPolicyOf([]), "kv-adaptive", "the simulator's kv policy is the router serve runs");
  });

  it("a named policy wins, and the old default stays selectable by name", async () => {
    assert.equal((await policyOf(["--router-worker-selection-policy", "kv-router"])).policy, "kv-router");
    assert.equal((await policyOf(["--router-worker-selection-policy", "kv-adaptive", "--router-prefill-load-scale", "2"])).policy, "kv-adaptive");
    assert.equal(await simPolicyOf(["--router-worker-selection-policy", "kv-router"]), "kv-router");
  });

  it("--dynamo-defaults and Dynamo's presets: Dynamo's cost function (the cost policy), without a warning", async () => {
    for (const flag of ["--dynamo-defaults", "--agentic", "--load-aware"]) assert.deepEqual(await policyOf([flag]), { policy: "kv-router", warnings: [] }, flag);
    assert.equal(await simPolicyOf(["--agentic"]), "kv-router");
  });

  it("a cost weight or the TTFT cost: the cost policy, so the flag keeps Dynamo's meaning, with one line saying so", async () => {
    for (const args of [
      ["--router-prefill-load-scale", "2"],
      ["--router-kv-overlap-score-credit", "1"],
      ["--router-kv-overlap-score-credit-decay", "1"],
      ["--router-decode-active-request-weight", "8"],
      ["--kv-overlap-score-weight", "1"],
      ["--router-cost", "ttft"],
    ]) {
      const { policy, warnings } = await policyOf(args);
      assert.equal(policy, "kv-router", args.join(" "));
      assert.equal(warnings.filter((w) => w.includes("so the cost policy kv-router routes instead of the default kv-adaptive")).length, 1, args.join(" "));
    }
    assert.equal(await simPolicyOf(["--router-cost", "ttft"]), "kv-router");
  });

  it("kv-adaptive named with a cost weight or preset: it runs, and one line says the flag does not move it", async () => {
    for (const args of [["--router-prefill-load-scale", "2"], ["--agentic"], ["--router-cost", "ttft"]]) {
      const { policy, warnings } = await policyOf(["--router-worker-selection-policy", "kv-adaptive", ...args]);
      assert.equal(policy, "kv-adaptive", args.join(" "));
      assert.equal(warnings.filter((w) => w.includes("which kv-adaptive does not use")).length, 1, args.join(" "));
    }
    // Named with no cost flag: nothing to say.
    assert.deepEqual(await policyOf(["--router-worker-selection-policy", "kv-adaptive"]), { policy: "kv-adaptive", warnings: [] });
  });

  it("the cost weights not given are still Dynamo's", async () => {
    const argv = await serveOptions(yargs(["--block-size", "16"])).strict().exitProcess(false).parse();
    const r = routerConfigFrom(argv);
    assert.deepEqual([r.overlapScoreCredit, r.overlapScoreCreditDecay, r.decodeActiveRequestWeight], [1, 0, 0]);
  });
});

// The real CLI, spawned with no policy flags, and with --dynamo-defaults: its start-up line and its
// FindBestWorker answers (explain) over gRPC name the policy, and the scores are that policy's cost.
describe("a spawned router's policy, over gRPC", () => {
  const SERVE = ["--block-size", "4", "--host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "-1"];
  const routers: RouterProcess[] = [];
  after(async () => {
    await Promise.all(routers.map((r) => r.stop()));
  });

  /** Spawns the router, registers two idle workers, and routes a 9-token prompt with explain (and an optional override). */
  async function routeOnce(args: string[], override?: { prefillLoadScale: number }) {
    const router = await spawnRouter([...SERVE, ...args]);
    routers.push(router);
    const started = router
      .stderr()
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "kv-router started")!;
    const client = new KvRouterClient(router.grpcAddress);
    try {
      for (const workerId of [1n, 2n]) await client.registerWorker({ workerId });
      const plain = await client.findBestWorker({ tokenIds: [1, 2, 3, 4, 5, 6, 7, 8, 9], explain: true });
      const overridden = override && (await client.findBestWorker({ tokenIds: [1, 2, 3, 4, 5, 6, 7, 8, 9], explain: true, routerConfigOverride: override }));
      return { started, plain, overridden };
    } finally {
      client.close();
    }
  }

  it("no policy flags: kv-adaptive, whose idle fleet weighs load at 0.1; a request overriding a weight gets kv-router", async () => {
    const [none, dynamo] = await Promise.all([routeOnce([], { prefillLoadScale: 2 }), routeOnce(["--dynamo-defaults"])]);
    assert.equal(none.started.worker_selection_policy, "kv-adaptive");
    assert.equal(none.plain.workerSelectionPolicy, "kv-adaptive");
    assert.match(none.plain.selectionReason, /^lowest cost at load weight 0\.10 /);
    // Idle workers: kv-adaptive's cost is 4 (--agentic's prefill scale) x prefill blocks + 0.1 x decode blocks.
    for (const s of none.plain.scores) assert.ok(Math.abs(s.logit - (4 * s.prefillBlocks + 0.1 * Number(s.decodeBlocks))) < 1e-9, `logit ${s.logit}, prefill ${s.prefillBlocks}, decode ${s.decodeBlocks}`);
    assert.equal(none.overridden!.workerSelectionPolicy, "kv-router", "the override keeps Dynamo's meaning");
    for (const s of none.overridden!.scores) assert.equal(s.logit, 2 * s.prefillBlocks + Number(s.decodeBlocks));

    // --dynamo-defaults: Dynamo's cost function with Dynamo's weights (credit 1, scale 1, no per-request term).
    assert.equal(dynamo.started.worker_selection_policy, "kv-router");
    assert.deepEqual([dynamo.started.overlap_score_credit, dynamo.started.prefill_load_scale, dynamo.started.decode_active_request_weight], [1, 1, 0]);
    assert.equal(dynamo.plain.workerSelectionPolicy, "kv-router");
    assert.equal(dynamo.plain.selectionReason, "lowest cost");
    assert.equal(dynamo.plain.scores.length, 2);
    for (const s of dynamo.plain.scores) {
      assert.equal(s.prefillBlocks, 9 / 4, "an idle worker, nothing cached: the whole prompt, in blocks");
      assert.equal(s.logit, s.prefillBlocks + Number(s.decodeBlocks));
    }
  });
});
