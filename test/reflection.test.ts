// Server reflection and health, seen by a generic gRPC tool that has no copy
// of our proto: `buf curl` (the grpcurl of this toolchain) must discover the
// services, call them from JSON, and get the right answers.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { KvRouterService } from "../gen/kvrouter/v1/router_pb.js";
import { type TestRouter, startTestRouter } from "./support/router.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const BUF = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));
const B = 4;
const BIG = (1n << 64n) - 1000n; // a worker id above 2^63, which JSON carries as a string

interface CurlResult {
  code: number;
  stdout: string;
  stderr: string;
}

describe("reflection and health through buf curl", () => {
  let r: TestRouter;
  let base: string;

  /** `buf curl --protocol grpc --http2-prior-knowledge [args] URL`, asynchronously: the router serves from this process. */
  async function curl(args: string[], path = ""): Promise<CurlResult> {
    try {
      const { stdout, stderr } = await promisify(execFile)(
        BUF,
        ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args, `${base}${path}`],
        { cwd: REPO, timeout: 20_000 },
      );
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      if (typeof e.code !== "number") throw err; // not an exit status: buf did not run
      return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  }

  async function call(method: string, body: unknown[]): Promise<unknown> {
    const res = await curl(["-d", body.map((m) => JSON.stringify(m)).join("\n")], `/${method}`);
    assert.equal(res.code, 0, `${method}: ${res.stderr}`);
    return JSON.parse(res.stdout);
  }

  before(async () => {
    r = await startTestRouter({ blockSize: B });
    base = `http://${r.address}`;
  });

  after(async () => {
    await r?.close();
  });

  it("lists the router and health services", async () => {
    const res = await curl(["--list-services"]);
    assert.equal(res.code, 0, res.stderr);
    const services = res.stdout.trim().split("\n");
    assert.ok(services.includes(KvRouterService.typeName), services.join(", "));
    assert.ok(services.includes("grpc.health.v1.Health"), services.join(", "));
  });

  it("lists every method of the router service, as the generated descriptor declares them", async () => {
    const res = await curl(["--list-methods"]);
    assert.equal(res.code, 0, res.stderr);
    const methods = res.stdout.trim().split("\n");
    const ours = methods.filter((m) => m.startsWith(`${KvRouterService.typeName}/`)).sort();
    const declared = KvRouterService.methods.map((m) => `${KvRouterService.typeName}/${m.name}`).sort();
    assert.equal(declared.length, 10);
    assert.deepEqual(ours, declared);
    assert.ok(methods.includes("grpc.health.v1.Health/Check"));
  });

  it("routes a FindBestWorker call made from JSON to the worker holding the prefix", async () => {
    for (const id of [1n, 2n, BIG]) await r.client.registerWorker({ workerId: id });
    // Client streaming from JSON: two messages on one IngestKvEvents call, the second continuing the first.
    const ingest = await call(`${KvRouterService.typeName}/IngestKvEvents`, [
      {
        events: [
          { worker_id: BIG.toString(), event_id: 1, stored: { blocks: [{ block_hash: 1, token_ids: [11, 12, 13, 14] }] } },
          { worker_id: 2, event_id: 1, stored: { blocks: [{ block_hash: 9, token_ids: [11, 12, 13, 14] }] } },
        ],
      },
      {
        events: [
          {
            worker_id: BIG.toString(),
            event_id: 2,
            stored: { parent_block_hash: "1", blocks: [{ block_hash: 2, token_ids: [15, 16, 17, 18] }] },
          },
        ],
      },
    ]);
    assert.deepEqual(ingest, { applied: "3" });

    const decision = (await call(`${KvRouterService.typeName}/FindBestWorker`, [
      { token_ids: [11, 12, 13, 14, 15, 16, 17, 18, 19], explain: true },
    ])) as { worker: { workerId: string }; overlapBlocks: number; promptBlocks: number; scores: { worker: { workerId: string }; overlapBlocks?: number }[] };
    assert.equal(decision.worker.workerId, BIG.toString());
    assert.equal(decision.overlapBlocks, 2);
    assert.equal(decision.promptBlocks, 2);
    const overlaps = Object.fromEntries(decision.scores.map((s) => [s.worker.workerId ?? "0", s.overlapBlocks ?? 0]));
    assert.deepEqual(overlaps, { [BIG.toString()]: 2, "2": 1, "1": 0 });

    // The same state through the TypeScript client.
    const ts = await r.client.findBestWorker({ tokenIds: [11, 12, 13, 14, 15, 16, 17, 18, 19] });
    assert.equal(ts.worker!.workerId, BIG);
    assert.equal(ts.overlapBlocks, 2);
  });

  it("rejects a malformed call with invalid_argument and a message", async () => {
    const res = await curl(["-d", JSON.stringify({ token_ids: [] })], `/${KvRouterService.typeName}/FindBestWorker`);
    assert.notEqual(res.code, 0);
    assert.match(res.stderr, /invalid_argument/);
    assert.match(res.stderr, /token_ids is empty/);
  });

  it("answers health checks: SERVING for the server and for the router service", async () => {
    assert.deepEqual(await call("grpc.health.v1.Health/Check", [{}]), { status: "SERVING" });
    assert.deepEqual(await call("grpc.health.v1.Health/Check", [{ service: KvRouterService.typeName }]), { status: "SERVING" });
    const unknown = await curl(["-d", JSON.stringify({ service: "no.such.Service" })], "/grpc.health.v1.Health/Check");
    assert.notEqual(unknown.code, 0, "an unknown service is not reported healthy");
    assert.match(unknown.stderr, /not_found/);
  });
});
