// Dynamo discovery values and ZMQ event-plane messages, valid and mutated:
// a parser yields a well-formed record or refuses with its DecodeError, and
// never throws anything else. Valid inputs are the shapes Dynamo writes
// (test/support/dynamo.ts cites them).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encode } from "@msgpack/msgpack";
import { parseEndpointInstance, parseEventChannel } from "../src/discovery/dynamoRecords.js";
import { DecodeError } from "../src/protocols/routerEventCodec.js";
import { decodeEventPlaneMessage } from "../src/sources/dynamoZmq/dynamoZmqSource.js";
import { seededRandom } from "../src/util/random.js";
import { channelValue, instanceValue } from "./support/dynamo.js";

const CASES = Number(process.env.FUZZ_CASES ?? 1500);
const enc = new TextEncoder();

function u64be(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v);
  return b;
}

function dynamoFrames(envelope: Uint8Array): Uint8Array[] {
  const frame = new Uint8Array(5 + envelope.length);
  frame[0] = 1;
  new DataView(frame.buffer).setUint32(1, envelope.length);
  frame.set(envelope, 5);
  return [enc.encode("kv-events"), u64be(7n), u64be(3n), frame];
}

function flip(bytes: Uint8Array, rnd: () => number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let i = 0, n = 1 + Math.floor(rnd() * 4); i < n && out.length > 0; i++) out[Math.floor(rnd() * out.length)] = Math.floor(rnd() * 256);
  return rnd() < 0.2 ? out.subarray(0, Math.floor(rnd() * out.length)) : out;
}

function refusedOrOk(f: () => unknown): void {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof DecodeError, `threw ${String(err)} instead of a DecodeError`);
  }
}

describe("Dynamo discovery records and event-plane messages", () => {
  it("reads the records Dynamo writes, u64 ids exact", () => {
    const id = 0xfedc_ba98_7654_3210n; // beyond 2^53
    assert.deepEqual(parseEndpointInstance(enc.encode(instanceValue(id))), {
      namespace: "dynamo",
      component: "backend",
      endpoint: "generate",
      instanceId: id,
    });
    const ch = parseEventChannel(enc.encode(channelValue(id, "tcp://10.0.0.1:5555")));
    assert.equal(ch.publisherId, id);
    assert.deepEqual(ch.transport, { kind: "zmq", endpoint: "tcp://10.0.0.1:5555" });
    assert.equal(ch.endpoint, undefined, "component scope");
    const scoped = parseEventChannel(
      enc.encode(
        `{"type":"EventChannel","scope":{"kind":"endpoint","endpoint":{"namespace":"dynamo","component":"backend","name":"generate"}},` +
          `"topic":"kv-events","instance_id":5,"transport":{"kind":"Nats","config":{"subject_prefix":"namespace.dynamo.component.backend.endpoint.generate"}}}`,
      ),
    );
    assert.equal(scoped.endpoint, "generate");
    assert.equal(scoped.transport.kind, "nats");
    // Older releases: namespace and component beside the topic.
    const flat = parseEventChannel(enc.encode(`{"type":"EventChannel","namespace":"dynamo","component":"backend","topic":"kv-events","instance_id":9,"transport":{"kind":"Zmq","config":{"endpoint":"tcp://h:1"}}}`));
    assert.equal(flat.component, "backend");
    assert.throws(() => parseEndpointInstance(enc.encode(channelValue(1n, "tcp://h:1"))), DecodeError, "a channel is not an instance");
  });

  it("splits a Dynamo ZMQ event-plane message", () => {
    const envelope = encode({ topic: "kv-events", publisher_id: 7, sequence: 3, published_at: 1, payload: new Uint8Array([1]) });
    const m = decodeEventPlaneMessage(dynamoFrames(envelope));
    assert.equal(m.publisherId, 7n);
    assert.equal(m.sequence, 3n);
    assert.deepEqual([...m.envelope], [...envelope]);
    assert.throws(() => decodeEventPlaneMessage(dynamoFrames(envelope).slice(0, 3)), DecodeError);
  });

  it(`mutated values and messages are parsed or refused, never thrown otherwise (${CASES} cases)`, () => {
    const rnd = seededRandom(11);
    const instance = enc.encode(instanceValue(0x1234_5678_9abc_def0n));
    const channel = enc.encode(channelValue(42n, "tcp://127.0.0.1:5000"));
    const frames = dynamoFrames(encode({ topic: "kv-events", publisher_id: 7, sequence: 3, published_at: 1, payload: new Uint8Array([0x90]) }));
    for (let i = 0; i < CASES; i++) {
      refusedOrOk(() => parseEndpointInstance(flip(instance, rnd)));
      refusedOrOk(() => parseEventChannel(flip(channel, rnd)));
      const mutated = frames.map((f) => (rnd() < 0.4 ? flip(f, rnd) : f));
      refusedOrOk(() => decodeEventPlaneMessage(rnd() < 0.1 ? mutated.slice(0, Math.floor(rnd() * 5)) : mutated));
    }
  });
});
