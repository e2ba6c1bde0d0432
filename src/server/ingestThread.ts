// Entry of an ingest decoder thread (ingestPool.ts): decodes and hashes
// IngestKvEvents messages with the hot-path decoder and hands the flat batch
// back with its buffers transferred (no copy). A message the decoder hands
// back is answered "slow": the main thread decodes it with protobuf-es.
import { parentPort, workerData } from "node:worker_threads";
import { IngestDecoder } from "../decoding/ingestDecoder.js";

const decoder = new IngestDecoder((workerData as { blockSize: number }).blockSize);
parentPort!.on("message", ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  const out = decoder.decode(bytes);
  if (out === undefined) {
    parentPort!.postMessage({ id, slow: true });
    return;
  }
  const { batch, restore } = out;
  parentPort!.postMessage({ id, count: batch.count, events: batch.events, items: batch.items, restore }, [
    batch.events.buffer as ArrayBuffer,
    batch.items.buffer as ArrayBuffer,
  ]);
});
parentPort!.postMessage("ready");
