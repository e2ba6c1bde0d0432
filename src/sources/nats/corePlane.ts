// Dynamo's core-NATS event plane: MessagePack envelopes on a plain (not
// durable) subject, each carrying RouterEvents. Undecodable messages are
// counted and logged once per distinct error; the rest apply.
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { IndexEvent } from "../../indexer/types.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { DecodeError, decodeRouterEvent, parseEventPlane } from "../routerEventCodec.js";

export interface CorePlaneStats {
  /** Messages decoded (their events given to the index). */
  messages: number;
  /** Messages that could not be decoded. */
  malformed: number;
  /** Events applied from the decoded messages. */
  applied: number;
}

export class NatsCorePlane {
  readonly stats: CorePlaneStats = { messages: 0, malformed: 0, applied: 0 };
  private sub: Subscription | undefined;
  private loop: Promise<void> | undefined;
  private readonly logged = new Set<string>();

  constructor(readonly subject: string) {}

  /** Subscribes; flush the connection afterwards so the server knows the interest. */
  start(nc: NatsConnection, router: KvRouter): void {
    const sub = (this.sub = nc.subscribe(this.subject));
    this.loop = (async () => {
      for await (const m of sub) this.handle(m.data, router);
    })();
  }

  async stop(): Promise<void> {
    this.sub?.unsubscribe();
    await this.loop?.catch(() => undefined);
  }

  private handle(data: Uint8Array, router: KvRouter): void {
    const events: IndexEvent[] = [];
    try {
      for (const v of parseEventPlane(data)) {
        const d = decodeRouterEvent(v);
        if (d.kind === "event") events.push(d.event);
      }
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      this.stats.malformed++;
      if (!this.logged.has(err.message)) {
        this.logged.add(err.message);
        log.warn("malformed event-plane message skipped", { subject: this.subject, error: err.message });
      }
      return;
    }
    this.stats.messages++;
    this.stats.applied += router.applyEvents(events).applied;
  }
}
