// One worker's engine payloads on their way to the index shard that owns the
// worker (KvIndex.openEngineFeed): the shard decodes, hashes and applies
// them while this thread goes on receiving. Shared by every publisher of
// the worker, so the main thread's path never overtakes a payload queued
// here: it first waits until none is outstanding (quiesce). A payload the
// shard hands back (refused) is taken the main thread's way, in order, once
// nothing of the worker is outstanding, and then the shard takes payloads
// again.
import type { EngineFeed, EngineFeedApplied, EngineFeedMessage } from "../../indexer/types.js";
import { log } from "../../util/log.js";

/** One payload, and how its publisher finishes it whichever way it goes. */
export interface LanePayload {
  payload: Uint8Array;
  /** The shard applied it. */
  applied(result: EngineFeedApplied): void;
  /** The shard could not (it is down): nothing of it was applied. */
  failed(err: unknown): void;
  /** The shard refused it: take it the main thread's way (called in order, with nothing outstanding). */
  redo(): void;
}

export class ShardLane {
  /** Settles after the handlers of everything submitted so far. */
  private tail: Promise<void> = Promise.resolve();
  private readonly refused: LanePayload[] = [];
  /** Callers waiting for the lane to empty: meanwhile nothing new is queued. */
  private waiters = 0;

  constructor(private readonly feed: EngineFeed) {}

  /** Something queued here has not finished: the main thread's path must wait (quiesce) first. */
  get busy(): boolean {
    return this.feed.outstanding > 0 || this.refused.length > 0 || this.waiters > 0;
  }

  /** Queues a payload to the shard; false when it must take the main thread's path (after quiesce() if busy). */
  submit(message: EngineFeedMessage, p: LanePayload): boolean {
    if (this.waiters > 0 || this.refused.length > 0) return false;
    const applying = this.feed.submit(message, p.payload);
    if (applying === undefined) return false;
    const settled = applying.then(
      (result) => {
        if (result === "refused") this.refused.push(p);
        else p.applied(result);
      },
      (err: unknown) => p.failed(err),
    );
    // Handlers run in submission order; the refused ones are redone once the last outstanding one is in.
    this.tail = this.tail.then(() => settled).then(() => this.redoRefused());
    return true;
  }

  /** Resolves once nothing submitted here is outstanding or waiting to be redone. */
  async quiesce(): Promise<void> {
    this.waiters++;
    try {
      while (this.feed.outstanding > 0 || this.refused.length > 0) await this.tail;
    } finally {
      this.waiters--;
    }
  }

  /** The worker's feeds stopped: results still in flight settle, and the flag is freed after them. */
  close(): void {
    this.feed.close();
  }

  private redoRefused(): void {
    if (this.feed.outstanding > 0 || this.refused.length === 0) return;
    const redo = this.refused.splice(0);
    for (const p of redo) {
      try {
        p.redo();
      } catch (err) {
        // A bug must not stop the feed (the subscriber's own loop says the same).
        log.error("engine KV batch handling failed", { error: String((err as Error)?.stack ?? err) });
      }
    }
    this.feed.resume();
  }
}
