// The defaults kv-router applies when the user sets nothing, through the real
// command-line parser: kv-router's tuned values (docs/simulation, "Tuned
// defaults"), Dynamo's with --dynamo-defaults or the --load-aware preset, and
// every explicit flag keeping Dynamo's meaning. The simulator's `kv` policy
// takes the same values.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import yargs from "yargs";
import { serveOptions } from "../src/cli/options.js";
import { routerConfigFrom } from "../src/cli/config.js";
import { DYNAMO_DEFAULTS, KV_ROUTER_DEFAULTS } from "../src/scheduler/defaults.js";
import { simOptionsFrom, simulateOptions } from "../src/cli/simulateCommand.js";

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
