// Faults on the gRPC path: a worker's event stream cut mid-way, and a router
// killed outright. What the router applied must be a clean prefix of what was
// sent — never a partial message, never a hole.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { IngestKvEventsRequestSchema } from "../gen/kvrouter/v1/router_pb.js";
import { KvRouterClient } from "../src/client/kvRouterClient.js";
import { spawnRouter } from "./support/cliProcess.js";
import { startTestRouter, tokens } from "./support/router.js";
import { stored } from "./support/events.js";
import { waitFor } from "./support/wait.js";

const B = 4;
const MESSAGES = 400;
const PER_MESSAGE = 5;

/** Message m stores blocks m*5 .. m*5+4 of one long chain (each continuing the previous). */
function chainMessage(m: number) {
  const events = [];
  for (let k = 0; k < PER_MESSAGE; k++) {
    const i = m * PER_MESSAGE + k;
    events.push(stored(1, i + 1, tokens(B, i * B), B, BigInt(1000 + i), { parent: i === 0 ? undefined : BigInt(999 + i) }));
  }
  return create(IngestKvEventsRequestSchema, { events });
}

describe("faults", () => {
  it("a stream cut mid-way leaves a clean prefix of whole messages", async () => {
    const r = await startTestRouter({ blockSize: B });
    try {
      const call = (r.client.raw as unknown as Record<string, Function>).ingestKvEvents(() => {}) as grpc.ClientWritableStream<unknown>;
      call.on("error", () => {}); // the cancellation surfaces here
      // Write at a pace, and cut the stream once the router has applied part of it.
      for (let m = 0; m < MESSAGES; m++) {
        call.write(chainMessage(m));
        if (m % 20 === 19) {
          await new Promise((res) => setTimeout(res, 2));
          const applied = (await r.client.listWorkers()).workers[0]?.cachedBlocks ?? 0n;
          if (applied >= 50n * BigInt(PER_MESSAGE)) break;
        }
      }
      call.cancel();
      await new Promise((res) => setTimeout(res, 200));
      const [w] = (await r.client.listWorkers()).workers;
      const held = Number(w?.cachedBlocks ?? 0);
      console.log(`stream cut after ${held / PER_MESSAGE} of ${MESSAGES} messages`);
      assert.equal(held % PER_MESSAGE, 0, `applied ${held} blocks: a message was applied in part`);
      assert.equal(w ? Number(w.lastEventId) : 0, held, "event cursor matches what was applied");
      const prompt = tokens(MESSAGES * PER_MESSAGE * B);
      const d = await r.client.findBestWorker({ tokenIds: prompt, explain: true }).catch(() => undefined);
      assert.equal(d?.overlapBlocks ?? 0, held, "what was applied is one contiguous prefix");
      // The worker resumes where it stopped, on a new stream.
      const resumed = await r.client.ingestKvEvents(
        Array.from({ length: MESSAGES - held / PER_MESSAGE }, (_, j) => chainMessage(held / PER_MESSAGE + j)),
      );
      assert.equal(resumed.rejected, 0n);
      assert.equal((await r.client.findBestWorker({ tokenIds: prompt })).overlapBlocks, MESSAGES * PER_MESSAGE);
    } finally {
      await r.close();
    }
  });

  it("a router killed with SIGKILL is restarted and rebuilt from a dump", async () => {
    const args = ["--block-size", String(B), "--grpc-port", "0", "--metrics-port", "-1", "--host", "127.0.0.1"];
    const first = await spawnRouter(args);
    const client = new KvRouterClient(first.grpcAddress);
    const dumpClient = (p: { grpcAddress: string }) => new KvRouterClient(p.grpcAddress);
    let second: Awaited<ReturnType<typeof spawnRouter>> | undefined;
    try {
      await client.ingestKvEvents(Array.from({ length: 40 }, (_, m) => chainMessage(m)));
      const dump = await client.dumpIndex();
      first.child.kill("SIGKILL");
      await waitFor(() => first.child.exitCode !== null || first.child.signalCode !== null, "the router to die");
      second = await spawnRouter(args);
      const c2 = dumpClient(second);
      try {
        assert.equal((await c2.sendEvents(dump, true)).rejected, 0n);
        assert.deepEqual(await c2.dumpIndex(), dump);
        // The next live event continues the cursor.
        const next = await c2.ingestKvEvents([chainMessage(40)]);
        assert.equal(next.applied, BigInt(PER_MESSAGE));
        assert.equal((await c2.findBestWorker({ tokenIds: tokens(41 * PER_MESSAGE * B) })).overlapBlocks, 41 * PER_MESSAGE);
      } finally {
        c2.close();
      }
    } finally {
      client.close();
      if (second) assert.equal(await second.stop(), 0);
      await first.stop();
    }
  });
});
