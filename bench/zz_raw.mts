import { existsSync, readdirSync, readFileSync } from "node:fs";
import { workerStreams } from "./rawIngest.bench.js";
import { TRACE, mooncake } from "./workload.js";
import { CompactIndex } from "../src/indexer/compactIndex.js";
import { IngestDecoder } from "../src/decoding/ingestDecoder.js";
const w = mooncake(Number(process.env.N ?? 1000000));
const streams = workerStreams(w.events, Number(process.argv[4] ?? 1));
const msgs = streams.reduce((n, s) => n + s.length, 0);
console.log("events", w.events.length, "messages", msgs, "blocks/message", (w.storedBlocks / msgs).toFixed(1), "bytes/message", (streams.flat().reduce((n, m) => n + m.length, 0) / msgs).toFixed(0));
function cpu(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of readdirSync("/proc/self/task")) {
    const s = readFileSync(`/proc/self/task/${t}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    out[t] = (Number(f[11]) + Number(f[12])) / 100;
  }
  return out;
}
const mode = process.argv[2] ?? "raw";
const shards = Number(process.argv[3] ?? 1);
const index = await CompactIndex.create({ shards, maxBlocks: w.storedBlocks, blockSize: 64 });
const decoder = new IngestDecoder(64);
for (let pass = 0; pass < 2; pass++) {
  const c0 = cpu();
  const t0 = performance.now();
  await Promise.all(streams.map(async (messages) => {
    const raw = mode === "raw" ? index.openRawStream() : undefined;
    const inFlight: Promise<unknown>[] = [];
    for (const m of messages) {
      if (inFlight.length >= 16) await inFlight.shift();
      const s = raw?.submit(m);
      if (s) { inFlight.push(s); continue; }
      await Promise.all(inFlight.splice(0));
      inFlight.push(index.applyBatchAsync(decoder.decode(m)!.batch));
    }
    await Promise.all(inFlight);
    raw?.close();
  }));
  const ms = performance.now() - t0;
  const c1 = cpu();
  const d = Object.entries(c1).map(([k, v]) => [k, v - (c0[k] ?? 0)]).filter(([, v]) => (v as number) > 0.02).map(([k, v]) => `${k}=${(v as number).toFixed(2)}`);
  console.log(mode, shards, "pass", pass, (w.storedBlocks / ms / 1000).toFixed(2), "M/s", ms.toFixed(0), "ms; cpu s:", d.join(" "));
  if (pass === 0) for (const key of index.workers()) index.removeWorker(key.workerId);
}
await index.close();
