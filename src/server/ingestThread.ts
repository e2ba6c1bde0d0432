// Entry of an ingest decoder thread (ingestPool.ts): decodes and hashes
// IngestKvEvents messages with the hot-path decoder and hands the flat batch
// back with its buffers transferred (no copy). A message the decoder hands
// back is answered "slow": the main thread decodes it with protobuf-es. So is
// one the decoder throws on (a bug): protobuf-es is the reference, so the
// message is still decoded right or refused precisely, and this thread
// serves on (the decoder resets its state for every message, as the shard
// threads' raw decoding also relies on). A throw must not end the thread: a
// client resending the message would kill one thread after another.
import { parentPort, workerData } from "node:worker_threads";
import { IngestDecoder } from "../decoding/ingestDecoder.js";

const { blockSize, testOnlyThrow } = workerData as { blockSize: number; testOnlyThrow?: boolean };
const decoder = new IngestDecoder(blockSize);
parentPort!.on("message", ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  let out: ReturnType<IngestDecoder["decode"]>;
  try {
    if (testOnlyThrow) throw new Error("test-only decoder throw");
    out = decoder.decode(bytes);
  } catch (err) {
    parentPort!.postMessage({ id, slow: true, error: String((err as Error)?.stack ?? err) });
    return;
  }
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
