// Worker-thread entry: streams RepeatingTraffic to a router at a set rate of
// stored blocks per second (0 = as fast as the server takes it), so the
// benchmark's main thread can time queries meanwhile. Posts
// { blocks, secs } once the server has answered the stream.
import { parentPort, workerData } from "node:worker_threads";
import { RepeatingTraffic, rawIngestClient } from "./ingestWire.js";

const { port, blocksPerSec, durationMs, firstWorker } = workerData as {
  port: number;
  blocksPerSec: number;
  durationMs: number;
  firstWorker: number;
};
const traffic = new RepeatingTraffic(firstWorker);
const client = rawIngestClient(port);
const stream = client.open();
const t0 = performance.now();
let blocks = 0;
while (performance.now() - t0 < durationMs) {
  const due = blocksPerSec > 0 ? (blocksPerSec * (performance.now() - t0)) / 1000 : Infinity;
  if (blocks + traffic.blocksPerMessage <= due) {
    blocks += traffic.blocksPerMessage;
    if (!stream.write(traffic.next())) await new Promise((resolve) => stream.once("drain", resolve));
  } else {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
stream.end();
await stream.done;
parentPort!.postMessage({ blocks, secs: (performance.now() - t0) / 1000 });
client.close();
