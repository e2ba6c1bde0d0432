// Dynamo's forward-pass metrics on the core-NATS event plane: MessagePack
// envelopes on plain subjects, one message per engine forward pass (and one a
// second when idle). Current workers publish on the endpoint-scoped subject,
// earlier ones (and Dynamo's own router subscriber of those releases) on the
// component-scoped one; both are read, as for KV events. What a message does
// is the shared feed's (src/sources/fpmFeed.ts).
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { ForwardPassMetricsFeed, type FpmOutcome } from "../fpmFeed.js";

export class NatsFpmPlane {
  private feed: ForwardPassMetricsFeed | undefined;
  private readonly subs: Subscription[] = [];
  private readonly loops: Promise<void>[] = [];

  constructor(readonly subjects: readonly string[]) {}

  /** Messages by outcome (all 0 before start). */
  count(outcome: FpmOutcome): number {
    return this.feed?.counts[outcome] ?? 0;
  }

  /** Subscribes; flush the connection afterwards so the server knows the interest. */
  start(nc: NatsConnection, router: KvRouter): void {
    const feed = (this.feed = new ForwardPassMetricsFeed(router, "nats"));
    for (const subject of this.subjects) {
      const sub = nc.subscribe(subject);
      this.subs.push(sub);
      this.loops.push(
        (async () => {
          for await (const m of sub) feed.onEnvelope(m.data, { subject });
        })().catch((err) => log.error("forward-pass metrics subscription ended", { subject, error: String(err) })),
      );
    }
  }

  async stop(): Promise<void> {
    for (const sub of this.subs) sub.unsubscribe();
    await Promise.all(this.loops.map((l) => l.catch(() => undefined)));
  }
}
