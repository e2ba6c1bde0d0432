#!/usr/bin/env python3
"""A KV event publisher on Dynamo's ZMQ event plane (direct mode), for tests.

Sends exactly what Dynamo's ZmqPubTransport sends (written from
lib/runtime/src/transports/event_plane/{zmq_transport,frame,codec,traits}.rs):
a 4-part message [topic, publisher_id (u64 big-endian), sequence (u64
big-endian), frame], where frame = u8 version 1 + u32 big-endian length + the
EventEnvelope {topic, publisher_id, sequence, published_at, payload} as
rmp-serde named (a MessagePack map; payload as bin), and payload is the
RouterEvent, also a named map. Dynamo cannot run here; this stands in for it.

Arguments: [publisher_id] [topic] (topic: kv-events, or forward-pass-metrics
for an engine's forward-pass metrics publisher, test/python/dynamo_fpm.py).

Protocol: prints `{"endpoint": "tcp://127.0.0.1:PORT"}` once bound; then reads
one JSON command per line on stdin:
  {"publish": <RouterEvent as JSON, ints as ints>}  -> sends it, prints {"ok": seq}
  {"publish_fpm": <dynamo_fpm.py spec>}             -> sends a ForwardPassMetrics payload
  {"raw_frame": "<hex>"}                             -> sends 4 parts with that frame
  {"quit": true}
"""
import json
import struct
import sys
import time

import msgpack
import zmq

from dynamo_fpm import forward_pass_metrics


def main() -> None:
    publisher_id = int(sys.argv[1]) if len(sys.argv) > 1 else 0x1234
    topic = sys.argv[2] if len(sys.argv) > 2 else "kv-events"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 100000)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(json.dumps({"endpoint": f"tcp://127.0.0.1:{port}"}), flush=True)
    sequence = 0
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        if "publish" in cmd or "publish_fpm" in cmd:
            if "publish_fpm" in cmd:
                payload = forward_pass_metrics(cmd["publish_fpm"])
            else:
                payload = msgpack.packb(cmd["publish"], use_bin_type=True)
            envelope = msgpack.packb(
                {
                    "topic": topic,
                    "publisher_id": publisher_id,
                    "sequence": sequence,
                    "published_at": int(time.time() * 1000),
                    "payload": payload,
                },
                use_bin_type=True,
            )
            frame = struct.pack(">BI", 1, len(envelope)) + envelope
        else:
            frame = bytes.fromhex(cmd["raw_frame"])
        sock.send_multipart(
            [topic.encode(), struct.pack(">Q", publisher_id), struct.pack(">Q", sequence), frame]
        )
        print(json.dumps({"ok": sequence}), flush=True)
        sequence += 1
    sock.close(linger=0)
    ctx.term()


if __name__ == "__main__":
    main()
