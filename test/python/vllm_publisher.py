#!/usr/bin/python3
"""A stand-in for vLLM's (and SGLang's) ZmqEventPublisher, for kv-router tests.

Sends what those engines send, frame for frame: [topic, seq (u64 big-endian),
msgpack payload] on a PUB-type socket, with an in-memory replay buffer served
on a ROUTER socket ([identity, "", start seq] in; [identity, "", seq, payload]
per buffered batch and an END_SEQ (-1) marker out).

vLLM encodes with msgspec; this uses Debian's python3-msgpack, which picks the
same (smallest) int formats, float64 for floats, str8+ and bin for bytes.
Structs become arrays (array_like=True) or maps tagged under "type"
(msgspec tag=True without array_like), fields in declaration order; fields with
a default are left out when they hold it (omit_defaults=True, trailing only for
arrays). See docs/vllm.md for the formats:

  vllm-array  [ts, [["BlockStored", ...]], dp_rank]        vLLM before #42892
  vllm-map    [ts, [{"type": "BlockStored", ...}], dp_rank] vLLM since #42892
  vllm-map-batch {"ts", "events": [{...}], "data_parallel_rank"}
  sglang      [ts, [["BlockStored", ..., medium, cache_salt?]], attn_dp_rank]

The socket is XPUB rather than PUB only so that the test can wait until the
router's subscription has arrived (ZeroMQ drops what PUB sends before that);
the frames on the wire are the same.

Control: one JSON command per line on stdin, one JSON reply per line on stdout.
  {"cmd": "batch", "events": [...], "dp_rank": 0, "skip": false}
      publish one batch (skip: give it a seq and buffer it, but do not send it)
  {"cmd": "batch", "payload_hex": "..."}     publish these payload bytes under the next seq
  {"cmd": "raw", "frames": ["hex", ...]}      send arbitrary frames (garbage)
  {"cmd": "evict", "below": N}                drop buffered batches with seq < N
  {"cmd": "restart"}                           sequence back to 0, buffer emptied
  {"cmd": "wait_subscribed"}                   reply once a subscriber has joined
  {"cmd": "quit"}
Hashes in events are JSON strings ("0x..", "-12", "123") or {"bytes": "hex"}.
"""

import argparse
import json
import os
import sys
import time
from collections import deque

import msgpack
import zmq

END_SEQ = (-1).to_bytes(8, "big", signed=True)

# Declaration order and defaults of vLLM's BlockStored/BlockRemoved (kv_events.py).
# No default: always encoded (None as nil). With a default: omitted when equal to it.
VLLM_STORED = [
    ("block_hashes", "required"), ("parent_block_hash", "required"), ("token_ids", "required"),
    ("block_size", "required"), ("lora_id", "required"), ("medium", "required"),
    ("lora_name", "required"), ("extra_keys", None), ("group_idx", None),
    ("kv_cache_spec_kind", None), ("kv_cache_spec_sliding_window", None),
]
VLLM_REMOVED = [("block_hashes", "required"), ("medium", "required"), ("group_idx", None)]
# SGLang's: medium and what follows have defaults.
SGLANG_STORED = [
    ("block_hashes", "required"), ("parent_block_hash", "required"), ("token_ids", "required"),
    ("block_size", "required"), ("lora_id", "required"), ("medium", None), ("cache_salt", None),
]
SGLANG_REMOVED = [("block_hashes", "required"), ("medium", None)]


def hash_value(v):
    if isinstance(v, dict):
        return bytes.fromhex(v["bytes"])
    if isinstance(v, str):
        return int(v, 0)
    return v


def convert(field, value):
    if field in ("block_hashes",):
        return [hash_value(h) for h in value]
    if field == "parent_block_hash" and value is not None:
        return hash_value(value)
    if field == "extra_keys" and value is not None:
        return [None if k is None else tuple(tuple(x) if isinstance(x, list) else x for x in k) for k in value]
    return value


def encode_struct(tag, fields, event, as_array):
    values = []
    for name, default in fields:
        present = name in event
        value = convert(name, event.get(name))
        values.append((name, value, default, present))
    if as_array:
        out = [tag] + [v for _, v, _, _ in values]
        # omit_defaults on an array struct drops trailing fields at their default.
        while len(out) > 1 and values[len(out) - 2][2] != "required" and out[-1] is None:
            out.pop()
        return out
    out = {"type": tag}
    for name, value, default, _ in values:
        if default != "required" and value is None:
            continue
        out[name] = value
    return out


def encode_event(event, fmt):
    tag = event["type"]
    as_array = fmt in ("vllm-array", "sglang")
    if tag == "AllBlocksCleared":
        return [tag] if as_array else {"type": tag}
    if tag == "BlockStored":
        fields = SGLANG_STORED if fmt == "sglang" else VLLM_STORED
    elif tag == "BlockRemoved":
        fields = SGLANG_REMOVED if fmt == "sglang" else VLLM_REMOVED
    else:
        raise ValueError(f"unknown event type {tag}")
    return encode_struct(tag, fields, event, as_array)


def encode_batch(events, dp_rank, fmt, ts):
    encoded = [encode_event(e, fmt) for e in events]
    if fmt == "vllm-map-batch":
        batch = {"ts": ts, "events": encoded}
        if dp_rank is not None:
            batch["data_parallel_rank"] = dp_rank
        return msgpack.packb(batch, use_bin_type=True)
    batch = [ts, encoded]
    if dp_rank is not None:
        batch.append(dp_rank)
    return msgpack.packb(batch, use_bin_type=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", default="vllm-map",
                    choices=["vllm-array", "vllm-map", "vllm-map-batch", "sglang"])
    ap.add_argument("--topic", default="")
    ap.add_argument("--replay", action="store_true", help="serve a replay (ROUTER) socket")
    ap.add_argument("--replay-topic-frame", action="store_true",
                    help="replay replies carry the topic before seq (newer vLLM)")
    ap.add_argument("--buffer-steps", type=int, default=10_000)
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (a pod's IP in Kubernetes tests: 127.0.0.x)")
    args = ap.parse_args()

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub_port = pub.bind_to_random_port(f"tcp://{args.host}")
    replay = None
    replay_port = None
    if args.replay:
        replay = ctx.socket(zmq.ROUTER)
        replay_port = replay.bind_to_random_port(f"tcp://{args.host}")

    topic = args.topic.encode("utf-8")
    buffer = deque(maxlen=args.buffer_steps)
    next_seq = 0
    subscribed = False
    waiting_for_subscriber = False

    def reply(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"ready": True, "endpoint": f"tcp://{args.host}:{pub_port}",
           "replay": f"tcp://{args.host}:{replay_port}" if replay is not None else None})

    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    stdin_fd = sys.stdin.fileno()
    poller.register(stdin_fd, zmq.POLLIN)
    if replay is not None:
        poller.register(replay, zmq.POLLIN)
    pending = b""
    deadline = time.time() + 600  # never outlive a hung test run

    while time.time() < deadline:
        ready = dict(poller.poll(1000))
        if pub in ready:
            msg = pub.recv()
            if msg[:1] == b"\x01":
                subscribed = True
                if waiting_for_subscriber:
                    waiting_for_subscriber = False
                    reply({"ok": True})
        if replay is not None and replay in ready:
            frames = replay.recv_multipart()
            if len(frames) == 3:
                client_id, _, start = frames
                start_seq = int.from_bytes(start, "big")
                for seq, buf in buffer:
                    if seq >= start_seq:
                        head = [client_id, b""] + ([topic] if args.replay_topic_frame else [])
                        replay.send_multipart(head + [seq.to_bytes(8, "big"), buf])
                tail = [client_id, b""] + ([b""] if args.replay_topic_frame else [])
                replay.send_multipart(tail + [END_SEQ, b""])
        if stdin_fd in ready:
            chunk = os.read(stdin_fd, 1 << 20)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if not line.strip():
                    continue
                cmd = json.loads(line)
                kind = cmd["cmd"]
                if kind == "quit":
                    reply({"ok": True})
                    return
                if kind == "batch":
                    if "payload_hex" in cmd:  # a deliberately broken payload, under a real seq
                        payload = bytes.fromhex(cmd["payload_hex"])
                    else:
                        payload = encode_batch(cmd["events"], cmd.get("dp_rank"), args.format,
                                               cmd.get("ts", time.time()))
                    seq = next_seq
                    next_seq += 1
                    if not cmd.get("skip", False):
                        pub.send_multipart((topic, seq.to_bytes(8, "big"), payload))
                    buffer.append((seq, payload))
                    reply({"ok": True, "seq": seq})
                elif kind == "raw":
                    pub.send_multipart([bytes.fromhex(f) for f in cmd["frames"]])
                    reply({"ok": True})
                elif kind == "evict":
                    while buffer and buffer[0][0] < cmd["below"]:
                        buffer.popleft()
                    reply({"ok": True})
                elif kind == "restart":
                    next_seq = 0
                    buffer.clear()
                    reply({"ok": True})
                elif kind == "wait_subscribed":
                    if subscribed:
                        reply({"ok": True})
                    else:
                        waiting_for_subscriber = True
                else:
                    reply({"ok": False, "error": f"unknown command {kind}"})


if __name__ == "__main__":
    try:
        main()
    finally:
        zmq.Context.instance().destroy(linger=0)
