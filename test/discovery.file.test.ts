// Dynamo discovery over the file store (DYN_FILE_KV) in a real temp
// directory, written the way Dynamo's FileStore writes it: bucket
// directories under the root, one file per key named by the percent-encoded
// key, published through a `.tmp_` file and a link, kept alive by touching.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, renameSync, rmSync, unlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import type { DynamoDiscovery } from "../src/discovery/dynamoDiscovery.js";
import { MAX_RECORD_BYTES, fileNameOfKey, keyOfFileName } from "../src/discovery/fileStore.js";
import { dynamoDiscoverySources } from "../src/cli/discoveryFlags.js";
import { COMPONENT, ENDPOINT, NS, instanceValue, dynamoInsert } from "./support/dynamo.js";
import { type TestRouter, startTestRouter, tokens } from "./support/router.js";
import { waitFor } from "./support/wait.js";

const TTL_MS = 1_500;


function registerWorker(root: string, instanceId: bigint): string {
  return dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/${instanceId.toString(16)}`, instanceValue(instanceId));
}

async function startRouter(root: string, fileKvTtlMs = TTL_MS, fileKvRescanMs?: number) {
  const sources = dynamoDiscoverySources({
    backend: "file",
    endpoint: `${NS}.${COMPONENT}.${ENDPOINT}`,
    etcdEndpoints: [],
    fileKvRoot: root,
    fileKvTtlMs,
    fileKvRescanMs,
    workerLeaseMs: 1_000,
    zmqEventPlane: false,
  });
  const r = await startTestRouter({ blockSize: 4 }, { eventSources: sources, metricsPort: 0 });
  return { r, discovery: sources[0] as DynamoDiscovery };
}

async function workerIds(r: TestRouter): Promise<bigint[]> {
  return (await r.client.listWorkers()).workers.map((w) => w.worker!.workerId);
}

async function upMetric(r: TestRouter): Promise<number | undefined> {
  const m = await r.server.metrics.registry.getSingleMetric("kvrouter_discovery_up")!.get();
  return m.values.find((v) => v.labels.backend === "file")?.value;
}

/** The file store's work so far (kvrouter_discovery_file_ops_total), by op. */
async function fileOps(r: TestRouter): Promise<Record<"scan" | "list" | "stat" | "read", number>> {
  const m = await r.server.metrics.registry.getSingleMetric("kvrouter_discovery_file_ops_total")!.get();
  return Object.fromEntries(m.values.map((v) => [v.labels.op, v.value])) as Record<"scan" | "list" | "stat" | "read", number>;
}

/** Touches the files like Dynamo's keep-alive thread until stopped. */
function keepAlive(path: string | string[], everyMs = 200): () => void {
  const t = setInterval(() => {
    const now = new Date();
    for (const p of [path].flat()) {
      try {
        utimesSync(p, now, now);
      } catch {
        /* deleted */
      }
    }
  }, everyMs);
  return () => clearInterval(t);
}

describe("Dynamo discovery over the file store", () => {
  const roots: string[] = [];
  const routers: TestRouter[] = [];
  const newRoot = () => {
    const root = mkdtempSync(join(tmpdir(), "kvr-filekv-"));
    roots.push(root);
    return root;
  };
  after(async () => {
    for (const r of routers) await r.close().catch(() => undefined);
    for (const root of roots) rmSync(root, { recursive: true, force: true });
  });

  it("file names are Dynamo's percent-encoded keys", () => {
    // Key::url_safe's own example (lib/runtime/src/storage/kv.rs).
    assert.equal(fileNameOfKey("dynamo/backend/generate/17216e63492ef21f"), "dynamo%2Fbackend%2Fgenerate%2F17216e63492ef21f");
    assert.equal(fileNameOfKey("a-b_c.d"), "a%2Db%5Fc%2Ed"); // NON_ALPHANUMERIC: '-', '_' and '.' too
    assert.equal(keyOfFileName("a%2Db%5Fc%2Ed"), "a-b_c.d");
  });

  it("sees a worker while its file is fresh, and forgets it when the file goes or goes stale", async () => {
    const root = newRoot();
    const w1 = 0x8f3a_1b2c_3d4e_5f60n; // FileStore's connection_id is a random u64
    const w2 = 0x1234n;
    const stop1 = keepAlive(registerWorker(root, w1));
    const p2 = registerWorker(root, w2);
    const stop2 = keepAlive(p2);
    const { r } = await startRouter(root);
    routers.push(r);
    try {
      await waitFor(async () => (await workerIds(r)).sort().join() === [w1, w2].sort().join(), "both workers seen");
      assert.ok([w1, w2].includes((await r.client.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId));

      stop2();
      unlinkSync(p2); // a clean shutdown deletes the worker's own files
      await waitFor(async () => !(await workerIds(r)).includes(w2), "deleted worker gone");

      stop1(); // a crashed worker stops touching its file: it goes stale after the TTL
      await waitFor(async () => (await workerIds(r)).length === 0, "stale worker gone", 15_000);
    } finally {
      stop1();
      stop2();
    }
  });

  it("skips and counts a record that is not JSON, ignores temp files, and sees a worker that registers later", async () => {
    const root = newRoot();
    dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/bad`, "not json");
    mkdirSync(join(root, "v1/instances"), { recursive: true });
    writeFileSync(join(root, "v1/instances", `.tmp_0000000000000001`), "{half-written");
    const { r, discovery } = await startRouter(root);
    routers.push(r);
    await waitFor(() => discovery.malformed.instance === 1, "bad record counted");
    const late = 0xfeedn;
    const stop = keepAlive(registerWorker(root, late));
    try {
      await waitFor(async () => (await workerIds(r)).includes(late), "worker registered after start seen");
      assert.equal(discovery.malformed.instance, 1, "the temp file is not read");
      // An update written through rename (Dynamo's non-zero revision path) replaces the record.
      const dir = join(root, "v1/instances");
      const tmp = join(dir, ".tmp_00000000000000ff");
      writeFileSync(tmp, instanceValue(late));
      renameSync(tmp, join(dir, fileNameOfKey(`${NS}/${COMPONENT}/${ENDPOINT}/${late.toString(16)}`)));
      assert.deepEqual(await workerIds(r), [late]);
    } finally {
      stop();
    }
  });

  it("keeps serving what it knew while the directory is gone, reports it, and resyncs when it is back", async () => {
    const root = newRoot();
    const w = 0x77n;
    const stop = keepAlive(registerWorker(root, w));
    const { r } = await startRouter(root);
    routers.push(r);
    try {
      await waitFor(async () => (await workerIds(r)).includes(w), "worker seen");
      assert.equal(await upMetric(r), 1);
      stop();
      rmSync(root, { recursive: true, force: true }); // the shared volume vanishes
      await waitFor(async () => (await upMetric(r)) === 0, "outage reported");
      assert.deepEqual(await workerIds(r), [w], "the router keeps the workers it knew");
      assert.equal((await r.client.findBestWorker({ tokenIds: tokens(8) })).worker!.workerId, w);

      mkdirSync(root);
      const back = 0x78n;
      const stopBack = keepAlive(registerWorker(root, back));
      try {
        await waitFor(async () => (await upMetric(r)) === 1, "store back");
        await waitFor(async () => (await workerIds(r)).join() === String(back), "resynced: the old worker is gone, the new one seen");
      } finally {
        stopBack();
      }
    } finally {
      stop();
    }
  });
  // Issue 24: every file was stat'ed on every scan and read again on every touch, and each touch's watch
  // event started another full scan, so a router under a live fleet's keep-alive never finished starting.
  it("starts under a fleet's keep-alive, and then neither reads a touched file again nor stats an idle one", async () => {
    const root = newRoot();
    const files = Array.from({ length: 300 }, (_, i) => registerWorker(root, BigInt(i + 1)));
    const stop = keepAlive(files, 50); // touching all along, from before the router starts
    try {
      const { r } = await startRouter(root, 60_000, 100);
      routers.push(r);
      await waitFor(async () => (await workerIds(r)).length === files.length, "every worker seen");
      const before = await fileOps(r);
      await waitFor(async () => (await fileOps(r)).scan >= before.scan + 10, "ten more scans");
      const after = await fileOps(r);
      assert.equal(after.read - before.read, 0, "a touch is not a new version: nothing is read again");
      assert.ok(after.stat - before.stat < files.length, `ten scans stat'ed ${after.stat - before.stat} files; a full pass each would be ${10 * files.length}`);
      assert.equal(before.read, files.length, "each record was read once");
      assert.equal((await workerIds(r)).length, files.length);
    } finally {
      stop();
    }
  });

  it("skips a record over the size bound unread, counts it once while it is touched, and reads it once it is a real record", async () => {
    const root = newRoot();
    const small = 0x5n;
    const big = 0xb16n;
    // Valid JSON padded past the bound: skipped for its size alone.
    const bigPath = dynamoInsert(root, "v1/instances", `${NS}/${COMPONENT}/${ENDPOINT}/${big.toString(16)}`, instanceValue(big).padEnd(MAX_RECORD_BYTES + 1, " "));
    const stop = keepAlive([registerWorker(root, small), bigPath], 50);
    try {
      const { r, discovery } = await startRouter(root, 60_000, 100);
      routers.push(r);
      await waitFor(async () => (await workerIds(r)).includes(small), "the small record's worker seen");
      const before = await fileOps(r);
      await waitFor(async () => (await fileOps(r)).scan >= before.scan + 10, "ten more scans");
      assert.deepEqual(await workerIds(r), [small]);
      assert.equal(discovery.malformed.instance, 1, "counted once, however often it is touched");
      assert.equal((await fileOps(r)).read, 1, "only the small record was read");

      const dir = join(root, "v1/instances");
      const tmp = join(dir, ".tmp_00000000000000b1");
      writeFileSync(tmp, instanceValue(big));
      renameSync(tmp, bigPath); // a new version, within the bound
      await waitFor(async () => (await workerIds(r)).includes(big), "the replaced record's worker seen");
    } finally {
      stop();
    }
  });
});
