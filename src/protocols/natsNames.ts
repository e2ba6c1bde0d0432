// Subject, stream and bucket names derived from `--endpoint ns.component.endpoint`,
// spelled the way Dynamo spells them (see docs/nats.md for the sources).
import { FPM_TOPIC } from "./forwardPassMetrics.js";

/** Dynamo's slug: lowercase; anything but [a-z0-9-] becomes '-'. */
export function slugify(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9-]/g, "-");
}

/**
 * Dynamo's event-plane subject segment (lib/runtime/src/discovery: encode_event_segment):
 * [A-Za-z0-9_-] stay, every other byte becomes %XX, so a name cannot add subject tokens.
 */
export function encodeEventSegment(text: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

export interface NatsNames {
  namespace: string;
  component: string;
  endpoint: string;
  /** `namespace.{ns}.component.{comp}`: Dynamo's component subject prefix. */
  componentSubject: string;
  /** Core-NATS event plane subject, component-scoped (MessagePack envelopes; older workers). */
  eventPlaneSubject: string;
  /** Core-NATS event plane subject, endpoint-scoped: where current Dynamo workers publish KV events. */
  endpointEventPlaneSubject: string;
  /** Dynamo's forward-pass metrics, component-scoped (the publishers and router subscriber of earlier releases). */
  fpmSubject: string;
  /** Dynamo's forward-pass metrics, endpoint-scoped: where current workers publish them (the generate endpoint). */
  endpointFpmSubject: string;
  /** JetStream stream holding JSON RouterEvents. */
  stream: string;
  /** The stream binds `{stream}.*`; Dynamo's NatsQueue publishes on `{stream}.queue`. */
  streamSubjects: string;
  publishSubject: string;
  /** Replica sync of active sequences (core NATS). */
  activeSequencesSubject: string;
  /** Object store bucket and object name of index snapshots. */
  snapshotBucket: string;
  snapshotObject: string;
  /** KV bucket of the snapshot lock (one writer at a time). */
  lockBucket: string;
  /** KV bucket where workers of this endpoint register (discovery). */
  discoveryBucket: string;
}

export function natsNames(endpoint: string): NatsNames {
  const [namespace, component, ep] = endpoint.split(".");
  if (!namespace || !component || !ep) throw new Error(`endpoint must be namespace.component.endpoint, got "${endpoint}"`);
  const componentSubject = `namespace.${namespace}.component.${component}`;
  const stream = slugify(`${componentSubject}.kv-events`);
  // Dynamo's EventScope::subject: each segment, the topic too, percent-encoded.
  const scoped = (...segments: string[]) => segments.map((s, i) => (i % 2 === 0 ? s : encodeEventSegment(s))).join(".");
  const fpmTopic = encodeEventSegment(FPM_TOPIC);
  return {
    namespace,
    component,
    endpoint: ep,
    componentSubject,
    eventPlaneSubject: `${componentSubject}.kv-events`,
    endpointEventPlaneSubject: [
      "namespace",
      encodeEventSegment(namespace),
      "component",
      encodeEventSegment(component),
      "endpoint",
      encodeEventSegment(ep),
      "kv-events",
    ].join("."),
    fpmSubject: `${scoped("namespace", namespace, "component", component)}.${fpmTopic}`,
    endpointFpmSubject: `${scoped("namespace", namespace, "component", component, "endpoint", ep)}.${fpmTopic}`,
    stream,
    streamSubjects: `${stream}.*`,
    publishSubject: `${stream}.queue`,
    activeSequencesSubject: `${componentSubject}.active_sequences_events`,
    snapshotBucket: slugify(`${componentSubject}-radix-bucket`),
    // Not Dynamo's "radix-state": our dump is MessagePack, theirs bincode; a
    // shared name would make each side fail on the other's snapshot.
    snapshotObject: "kv-router-radix-state",
    lockBucket: slugify(`${componentSubject}-kv-router-locks`),
    discoveryBucket: slugify(`${componentSubject}.${ep}-kv-router-workers`),
  };
}

/** A consumer/router id safe in NATS names (no '.', '*', '>' or spaces). */
export function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9_-]/g, "-");
}
