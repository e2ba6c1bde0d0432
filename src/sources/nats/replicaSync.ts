// --router-replica-sync: every replica publishes its local load changes
// (add / prefill done / free) on the component's active_sequences_events
// subject and applies the other replicas' ones, so all of them score workers
// against the same load. Messages follow Dynamo's ActiveSequenceEvent naming
// ({request_id, worker{worker_id, dp_rank}, data, router_id}) in JSON.
// Unlike Dynamo, a replica that joins asks its peers for the requests already
// in flight (request/reply on `<subject>.state`), so it does not start blind.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { parseWorkerKey } from "../../protocols/events.js";
import type { KvRouter } from "../../router/router.js";
import type { ActiveChange } from "../../router/types.js";
import { log } from "../../util/log.js";
import type { NatsNames } from "../../protocols/natsNames.js";
import { parseJsonLossless, stringifyJson } from "../../protocols/routerEventCodec.js";

export interface SyncStats {
  published: number;
  applied: number;
  malformed: number;
  /** Requests learned from peers when joining. */
  joined: number;
  /** Peers' requests not adopted because the active-request bounds were reached. */
  dropped: number;
}

/** How long a joining replica collects its peers' state. */
const JOIN_WAIT_MS = 500;

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
  readonly stats: SyncStats = { published: 0, applied: 0, malformed: 0, joined: 0, dropped: 0 };
  private sub: Subscription | undefined;
  private stateSub: Subscription | undefined;
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
      for await (const m of this.sub!) {
        try {
          this.apply(m.data);
        } catch (err) {
          // One bad peer message must not end the subscription.
          this.stats.malformed++;
          log.debug("replica sync message skipped", { error: String(err) });
        }
      }
    })().catch((err) => log.warn("replica sync subscription ended", { error: String(err) }));
    router.activeListener = (change) => {
      try {
        this.nc.publish(this.names.activeSequencesSubject, encodeChange(change, this.routerId));
        this.stats.published++;
      } catch (err) {
        // Fire-and-forget, like Dynamo: a lost update only skews load until the request is freed.
        log.warn("replica sync publish failed", { error: String(err) });
      }
    };
    this.stateSub = this.nc.subscribe(`${this.names.activeSequencesSubject}.state`, {
      callback: (err, m) => {
        if (!err) m.respond(this.encodeState());
      },
    });
    // Make sure the server has our interest before we report started.
    await this.nc.flush();
    await this.join();
  }

  private encodeState(): Uint8Array {
    const requests = this.router!.active.requestList().map((r) => {
      const w = parseWorkerKey(r.workerKey);
      return {
        request_id: r.requestId,
        worker: { worker_id: w.workerId, dp_rank: w.dpRank },
        token_sequence: [...r.blocks],
        prefill_tokens: r.prefillTokens,
        prefill_done: r.prefillDone,
      };
    });
    return new TextEncoder().encode(stringifyJson({ router_id: this.routerId, requests }));
  }

  /** Adopts the requests the other replicas have in flight. */
  private async join(): Promise<void> {
    const active = this.router!.active;
    try {
      const replies = await this.nc.requestMany(`${this.names.activeSequencesSubject}.state`, this.routerId, {
        strategy: "timer",
        maxWait: JOIN_WAIT_MS,
      });
      for await (const m of replies) {
        const doc = parseJsonLossless(new TextDecoder().decode(m.data)) as { router_id?: string; requests?: unknown[] };
        if (doc.router_id === this.routerId || !Array.isArray(doc.requests)) continue;
        for (const r of doc.requests as Record<string, unknown>[]) {
          const worker = r.worker as Record<string, unknown> | undefined;
          const id = r.request_id;
          if (typeof id !== "string" || active.has(id) || typeof worker?.worker_id !== "bigint") continue;
          const blocks = Array.isArray(r.token_sequence) ? (r.token_sequence as unknown[]).filter((b) => typeof b === "bigint") : [];
          if (active.roomProblem(blocks.length) !== undefined) {
            this.stats.dropped++;
            continue;
          }
          active.add(id, `${worker.worker_id}:${Number(worker.dp_rank ?? 0n)}`, blocks as bigint[], Number(r.prefill_tokens ?? 0n));
          if (r.prefill_done === true) active.markPrefillCompleted(id);
          this.stats.joined++;
        }
      }
    } catch (err) {
      // No peer answered (the first replica) or NATS hiccuped: start with no load, as Dynamo does.
      log.debug("replica sync: no peer state on join", { error: String(err) });
    }
  }

  async stop(): Promise<void> {
    if (this.router) this.router.activeListener = undefined;
    this.sub?.unsubscribe();
    this.stateSub?.unsubscribe();
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
      if (active.roomProblem(blocks.length) !== undefined) {
        this.stats.dropped++; // the same bounds as local requests (--max-active-requests, --max-active-blocks)
        return;
      }
      const key = `${worker.worker_id}:${Number(worker.dp_rank ?? 0n)}`;
      active.add(requestId, key, blocks as bigint[], Number(prefill));
    } else {
      this.stats.malformed++;
      return;
    }
    this.stats.applied++;
  }
}
