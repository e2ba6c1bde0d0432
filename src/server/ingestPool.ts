// IngestKvEvents decoding off the main thread: a pool of threads running
// the hot-path decoder (ingestThread.ts). The main thread only copies each
// message's bytes into a transferable buffer, and applies the flat batches
// that come back; so with spare cores ingest decodes in parallel and a big
// message no longer holds queries up while it is decoded and hashed.
import type { Worker } from "node:worker_threads";
import type { EventBatch } from "../protocols/eventBatch.js";
import { siblingModule, startThread } from "../util/threads.js";

/** A decoded message, or "slow": decode it with protobuf-es (see ingestDecoder.ts). */
export type PoolResult = { batch: EventBatch; restore: boolean } | "slow";

interface Pending {
  resolve(r: PoolResult): void;
  reject(e: Error): void;
}

export class IngestPool {
  private next = 0;
  private id = 0;
  private readonly pending = new Map<number, Pending>();

  private constructor(private readonly workers: Worker[]) {
    for (const w of workers) {
      w.on("message", (m: { id: number; slow?: true; count: number; events: Uint32Array; items: Uint32Array; restore: boolean }) => {
        const p = this.pending.get(m.id);
        if (p === undefined) return;
        this.pending.delete(m.id);
        p.resolve(m.slow ? "slow" : { batch: { count: m.count, events: m.events, items: m.items }, restore: m.restore });
      });
      w.on("error", (err) => this.failAll(err));
      w.unref();
    }
  }

  static async start(threads: number, blockSize: number): Promise<IngestPool> {
    const entry = siblingModule(import.meta.url, "ingestThread");
    const workers = Array.from({ length: threads }, (_, i) =>
      startThread(entry, { workerData: { blockSize }, name: `kv-ingest-decoder-${i}` }),
    );
    await Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            w.once("message", () => resolve());
            w.once("error", reject);
          }),
      ),
    );
    return new IngestPool(workers);
  }

  get threads(): number {
    return this.workers.length;
  }

  /** Decodes one message's bytes on the next thread (round robin). */
  decode(bytes: Uint8Array): Promise<PoolResult> {
    // gRPC's buffers are views of larger pooled ones: copy into a buffer of its own to transfer it.
    const copy = new Uint8Array(bytes);
    const id = this.id++;
    const worker = this.workers[this.next++ % this.workers.length];
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, bytes: copy }, [copy.buffer]);
    });
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
