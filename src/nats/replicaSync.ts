// --router-replica-sync: every replica publishes its local load changes
// (add / prefill done / free) on the component's active_sequences_events
// subject and applies the other replicas' ones, so all of them score workers
// against the same load. Messages follow Dynamo's ActiveSequenceEvent naming
// ({request_id, worker{worker_id, dp_rank}, data, router_id}) in JSON.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { parseWorkerKey } from "../indexer/types.js";
import type { ActiveChange, KvRouter } from "../router/router.js";
import { log } from "../util/log.js";
import type { NatsNames } from "./names.js";
import { parseJsonLossless, stringifyJson } from "./routerEventCodec.js";

export interface SyncStats {
  published: number;
  applied: number;
  malformed: number;
}

export function encodeChange(change: ActiveChange, routerId: string): Uint8Array {
  const w = parseWorkerKey(change.workerKey);
  let data: unknown;
  if (change.kind === "add") {
    data = { AddRequest: { token_sequence: change.blocks, prefill_tokens: change.prefillTokens } };
  } else {
    data = change.kind === "free" ? "Free" : "MarkPrefillCompleted";
  }
  const msg = { request_id: change.requestId, worker: { worker_id: w.workerId, dp_rank: w.dpRank }, data, router_id: routerId };
  return new TextEncoder().encode(stringifyJson(msg));
}

export class ReplicaSync {
  readonly stats: SyncStats = { published: 0, applied: 0, malformed: 0 };
  private sub: Subscription | undefined;
  private loop: Promise<void> | undefined;
  private router: KvRouter | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly names: NatsNames,
    private readonly routerId: string,
  ) {}

  async start(router: KvRouter): Promise<void> {
    this.router = router;
    this.sub = this.nc.subscribe(this.names.activeSequencesSubject);
    this.loop = (async () => {
      for await (const m of this.sub!) this.apply(m.data);
    })();
    router.activeListener = (change) => {
      try {
        this.nc.publish(this.names.activeSequencesSubject, encodeChange(change, this.routerId));
        this.stats.published++;
      } catch (err) {
        // Fire-and-forget, like Dynamo: a lost update only skews load until the request is freed.
        log.warn("replica sync publish failed", { error: String(err) });
      }
    };
    // Make sure the server has our interest before we report started.
    await this.nc.flush();
  }

  async stop(): Promise<void> {
    if (this.router) this.router.activeListener = undefined;
    this.sub?.unsubscribe();
    await this.loop?.catch(() => undefined);
  }

  private apply(bytes: Uint8Array): void {
    let m: Record<string, unknown>;
    try {
      m = parseJsonLossless(new TextDecoder().decode(bytes)) as Record<string, unknown>;
    } catch {
      this.stats.malformed++;
      return;
    }
    if (typeof m !== "object" || m === null || m.router_id === this.routerId) return;
    const requestId = m.request_id;
    const worker = m.worker as Record<string, unknown> | undefined;
    if (typeof requestId !== "string" || typeof worker !== "object" || worker === null) {
      this.stats.malformed++;
      return;
    }
    const active = this.router!.active;
    const data = m.data;
    if (data === "Free") active.free(requestId);
    else if (data === "MarkPrefillCompleted") active.markPrefillCompleted(requestId);
    else if (typeof data === "object" && data !== null && "AddRequest" in data) {
      const add = (data as { AddRequest: Record<string, unknown> }).AddRequest;
      const blocks = Array.isArray(add.token_sequence) ? (add.token_sequence as unknown[]) : [];
      const prefill = add.prefill_tokens;
      if (blocks.some((b) => typeof b !== "bigint") || typeof prefill !== "bigint" || typeof worker.worker_id !== "bigint") {
        this.stats.malformed++;
        return;
      }
      if (active.has(requestId)) return;
      const key = `${worker.worker_id}:${Number(worker.dp_rank ?? 0n)}`;
      active.add(requestId, key, blocks as bigint[], Number(prefill));
    } else {
      this.stats.malformed++;
      return;
    }
    this.stats.applied++;
  }
}
