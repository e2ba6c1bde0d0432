// Dynamo's ZeroMQ event plane (DYN_EVENT_PLANE=zmq, direct mode): each KV
// event publisher binds its own PUB socket and announces it in discovery under
// v1/event_channels (transport {"kind":"Zmq","config":{"endpoint"}}). This
// adapter follows those announcements: one SUB socket per announced publisher
// of the router's endpoint, opened when the announcement appears and closed
// when it goes. Messages carry the same MessagePack envelope as the NATS event
// plane, so decoding is the shared RouterEvent codec. Publishers of the
// engines' forward-pass metrics (topic forward-pass-metrics) are followed the
// same way; their messages go to the shared FPM feed (src/sources/fpmFeed.ts).
import * as zmq from "zeromq";
import { Gauge, type Registry } from "prom-client";
import { mirroredCounter } from "../../metrics/mirrored.js";
import type { ChannelObserver, DynamoDiscovery } from "../../discovery/dynamoDiscovery.js";
import type { EventChannel } from "../../discovery/dynamoRecords.js";
import type { IndexEvent } from "../../protocols/events.js";
import { DecodeError, eventPlaneEvents } from "../../protocols/routerEventCodec.js";
import { routerEventReader } from "../../decoding/dynamo/routerEventReader.js";
import type { IngestSummary } from "../../router/types.js";
import { FPM_TOPIC } from "../../protocols/forwardPassMetrics.js";
import { FPM_OUTCOMES, ForwardPassMetricsFeed } from "../fpmFeed.js";
import type { KvRouter } from "../../router/router.js";
import { log } from "../../util/log.js";
import { LogOnce } from "../../util/logOnce.js";
import { subscriberRoomProblem, zmqContext } from "../engineZmq/sockets.js";
import type { EventSource, EventSourceContext } from "../../router/eventSource.js";

/** Dynamo's frame.rs FRAME_VERSION and FRAME_HEADER_SIZE (u8 version, u32 big-endian payload length). */
const FRAME_VERSION = 1;
const FRAME_HEADER_SIZE = 5;
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface EventPlaneMessage {
  publisherId: bigint;
  sequence: bigint;
  /** The MessagePack EventEnvelope. */
  envelope: Uint8Array;
}

/**
 * Splits one multipart message as Dynamo's ZmqPubTransport sends it:
 * [topic, publisher_id (u64 BE), sequence (u64 BE), frame (5-byte header + envelope)].
 */
export function decodeEventPlaneMessage(frames: readonly Uint8Array[]): EventPlaneMessage {
  if (frames.length !== 4) throw new DecodeError(`expected 4 frames (topic, publisher_id, sequence, frame), got ${frames.length}`);
  const [, pub, seq, frame] = frames;
  if (pub.length !== 8) throw new DecodeError(`publisher_id frame: expected 8 bytes, got ${pub.length}`);
  if (seq.length !== 8) throw new DecodeError(`sequence frame: expected 8 bytes, got ${seq.length}`);
  if (frame.length < FRAME_HEADER_SIZE) throw new DecodeError(`frame: ${frame.length} bytes is shorter than its 5-byte header`);
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame[0] !== FRAME_VERSION) throw new DecodeError(`frame: unsupported version ${frame[0]} (expected ${FRAME_VERSION})`);
  const len = view.getUint32(1);
  if (frame.length - FRAME_HEADER_SIZE < len) throw new DecodeError(`frame: header says ${len} payload bytes, ${frame.length - FRAME_HEADER_SIZE} present`);
  const u64 = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0);
  return { publisherId: u64(pub), sequence: u64(seq), envelope: frame.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + len) };
}

interface Publisher {
  channel: EventChannel;
  sub: zmq.Subscriber;
  loop: Promise<void>;
  lastSequence?: bigint;
}

export class DynamoZmqEventPlane implements EventSource, ChannelObserver {
  readonly name = "dynamo-zmq";
  /** refused: messages the router refused whole (e.g. past --max-worker-ranks); unfollowed: publishers with no socket to spare. */
  readonly stats = { applied: 0, malformed: 0, gaps: 0, otherTier: 0, refused: 0, unfollowed: 0 };
  private readonly publishers = new Map<string, Publisher>();
  private readonly loggedErrors = new LogOnce();
  private router: KvRouter | undefined;
  private fpm: ForwardPassMetricsFeed | undefined;
  private stopped = false;

  constructor(discovery: DynamoDiscovery) {
    discovery.observers.push(this);
  }

  /** Forward-pass metrics messages by outcome (undefined before start). */
  get fpmCounts(): ForwardPassMetricsFeed["counts"] | undefined {
    return this.fpm?.counts;
  }

  get publisherCount(): number {
    return this.publishers.size;
  }

  async start(router: KvRouter, context?: EventSourceContext): Promise<void> {
    this.router = router;
    this.fpm = new ForwardPassMetricsFeed(router, "zmq");
    if (context) this.registerMetrics(context.registry);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.publishers.keys()].map((k) => this.close(k)));
  }

  channelAdded(key: string, channel: EventChannel): void {
    if (this.stopped || !this.router) return;
    if (channel.transport.kind !== "zmq") {
      // NATS channels are the NATS event plane's (--nats-url); brokers are not followed yet.
      if (channel.transport.kind !== "nats") this.warnOnce(`transport:${channel.transport.kind}`, "KV event publisher on an unsupported transport ignored", { key, transport: channel.transport.kind });
      return;
    }
    if (this.publishers.has(key)) return;
    // The engine subscribers' context (its socket limit follows the process's file limit), and room checked first.
    const full = subscriberRoomProblem(this.publishers.size, undefined);
    if (full !== undefined) {
      this.stats.unfollowed++;
      this.warnOnce(`room:${key}`, "announced KV event publisher not followed: no socket to spare", { key, endpoint: channel.transport.endpoint, reason: full });
      return;
    }
    const sub = new zmq.Subscriber({ context: zmqContext(), maxMessageSize: MAX_MESSAGE_BYTES, linger: 0, receiveHighWaterMark: 100_000 });
    try {
      sub.connect(channel.transport.endpoint);
    } catch (err) {
      sub.close();
      this.warnOnce(`connect:${key}`, "cannot connect to an announced KV event publisher", { key, endpoint: channel.transport.endpoint, error: String(err) });
      return;
    }
    // Direct-mode publishers put the bare topic in the first frame.
    sub.subscribe(channel.topic);
    const p: Publisher = { channel, sub, loop: Promise.resolve() };
    p.loop = this.run(key, p);
    this.publishers.set(key, p);
    log.info("following a Dynamo event publisher (ZMQ event plane)", { key, topic: channel.topic, endpoint: channel.transport.endpoint, publisher_id: channel.publisherId });
  }

  channelRemoved(key: string): void {
    void this.close(key);
  }

  private async close(key: string): Promise<void> {
    const p = this.publishers.get(key);
    if (!p) return;
    this.publishers.delete(key);
    p.sub.close();
    await p.loop;
    log.info("stopped following a Dynamo KV event publisher", { key });
  }

  private async run(key: string, p: Publisher): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await p.sub.receive();
      } catch {
        return; // closed
      }
      try {
        this.onMessage(p, frames);
      } catch (err) {
        // A bug must not stop the feed: say so and keep reading.
        log.error("Dynamo event-plane message handling failed", { key, error: String((err as Error).stack ?? err) });
      }
    }
  }

  private onMessage(p: Publisher, frames: Buffer[]): void {
    if (p.channel.topic === FPM_TOPIC) {
      this.onFpm(p, frames);
      return;
    }
    let msg: EventPlaneMessage;
    let applying: () => Promise<IngestSummary>;
    try {
      msg = decodeEventPlaneMessage(frames);
      // The common envelope (device-tier stores and removals) is read flat; the codec takes the rest.
      const batch = routerEventReader().read(msg.envelope);
      if (batch !== undefined) applying = () => this.router!.applyEventBatchAsync(batch);
      else {
        const events: IndexEvent[] = eventPlaneEvents(msg.envelope, () => this.stats.otherTier++);
        applying = () => this.router!.applyEventsAsync(events);
      }
    } catch (err) {
      // Any throw from a decoder is poison: counted, logged once per kind, skipped.
      this.stats.malformed++;
      const error = err instanceof DecodeError ? err.message : String(err);
      this.warnOnce(`decode:${error.slice(0, 80)}`, "malformed Dynamo event-plane message skipped", { endpoint: p.channel.transport, error });
      return;
    }
    // Dynamo's event plane is best effort (no replay): a jump in a publisher's sequence is counted.
    if (p.lastSequence !== undefined && msg.sequence > p.lastSequence + 1n) this.stats.gaps++;
    p.lastSequence = msg.sequence;
    try {
      // With index shard threads the message is queued and the feed goes on to the next one.
      applying().then(
        (summary) => {
          this.stats.applied += summary.applied;
        },
        (err: unknown) => this.warnOnce("apply_failed", "the index failed to apply a Dynamo event-plane message", { endpoint: p.channel.transport, error: String(err) }),
      );
    } catch (err) {
      this.stats.refused++;
      const error = (err as Error)?.message ?? String(err);
      this.warnOnce(`refused:${error.slice(0, 80)}`, "Dynamo event-plane message refused and skipped", { endpoint: p.channel.transport, error });
    }
  }

  /** A forward-pass metrics message: framing errors count as malformed FPM; the rest is the shared feed's. */
  private onFpm(p: Publisher, frames: Buffer[]): void {
    let msg: EventPlaneMessage;
    try {
      msg = decodeEventPlaneMessage(frames);
    } catch (err) {
      this.fpm!.counts.malformed++;
      this.warnOnce(`fpm-frame:${String((err as Error).message).slice(0, 80)}`, "malformed forward-pass metrics frame skipped", { endpoint: p.channel.transport, error: String((err as Error).message) });
      return;
    }
    this.fpm!.onEnvelope(msg.envelope, { endpoint: p.channel.transport.kind === "zmq" ? p.channel.transport.endpoint : undefined });
  }

  private warnOnce(topic: string, message: string, fields: Record<string, unknown>): void {
    this.loggedErrors.log(topic, `${message} (logged once)`, fields);
  }

  private registerMetrics(registry: Registry): void {
    const plane = this;
    new Gauge({
      name: "kvrouter_dynamo_zmq_publishers",
      help: "Dynamo KV event publishers (ZMQ event plane, announced in discovery) the router follows",
      registers: [registry],
      collect() {
        this.set(plane.publisherCount);
      },
    });
    mirroredCounter(
      registry,
      "kvrouter_dynamo_zmq_messages_total",
      "Dynamo ZMQ event-plane results: applied (events), malformed (messages skipped), refused (messages the router refused whole), gap (sequence jumps), other_tier (events not indexed), unfollowed (publishers with no socket to spare)",
      "outcome",
      {
        applied: () => plane.stats.applied,
        malformed: () => plane.stats.malformed,
        refused: () => plane.stats.refused,
        gap: () => plane.stats.gaps,
        other_tier: () => plane.stats.otherTier,
        unfollowed: () => plane.stats.unfollowed,
      },
    );
    mirroredCounter(
      registry,
      "kvrouter_dynamo_zmq_fpm_messages_total",
      "Dynamo forward-pass metrics messages (engine batch reports) on the ZMQ event plane, by outcome: applied, or skipped as malformed, oversized, unknown_version or unknown_worker",
      "outcome",
      Object.fromEntries(FPM_OUTCOMES.map((o) => [o, () => plane.fpm?.counts[o] ?? 0])),
    );
  }
}
