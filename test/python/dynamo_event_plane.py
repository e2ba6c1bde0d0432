#!/usr/bin/python3
"""The bytes a Dynamo worker publishes on the core-NATS event plane, for kv-router tests.

Written from Dynamo's definitions (see docs/dynamo.md), with Debian's python3-msgpack:
- lib/runtime/src/transports/event_plane: EventPublisher::publish encodes the
  payload with rmp_serde::to_vec_named, then wraps it in an EventEnvelope
  {topic, publisher_id, sequence, published_at, payload (bin), published_at_ns},
  also to_vec_named.
- lib/kv-router/src/protocols.rs: the payload is a Vec<RouterEvent>;
  RouterEvent {worker_id, storage_tier, residency_domain (left out when missing),
  event: KvCacheEvent {event_id, data, dp_rank}}; data is externally tagged
  snake_case: {"stored": KvCacheStoreData {parent_hash, start_position, blocks:
  [KvCacheStoredBlockData {block_hash, tokens_hash, mm_extra_info}]}},
  {"removed": {block_hashes}} or the unit variant "cleared".

rmp-serde's named encoding writes structs as maps in field order, unit variants
as their name, newtype variants as one-entry maps, None as nil, and integers in
their smallest form; msgpack.packb does the same for these values.

Input (stdin, JSON): {"publisher_id": N, "sequence": N, "events": [RouterEvent...]}
with u64 values as decimal strings or numbers; a RouterEvent field may be given
explicitly (e.g. "residency_domain") or left out to take Dynamo's default.
Output (stdout): the envelope bytes as hex.
"""

import json
import sys
import time

import msgpack


def u64(v):
    return int(v)


def block(b):
    return {"block_hash": u64(b["block_hash"]), "tokens_hash": u64(b["tokens_hash"]), "mm_extra_info": None}


def data(d):
    if d == "cleared":
        return "cleared"
    if "stored" in d:
        s = d["stored"]
        parent = s.get("parent_hash")
        return {
            "stored": {
                "parent_hash": None if parent is None else u64(parent),
                "start_position": s.get("start_position"),
                "blocks": [block(b) for b in s["blocks"]],
            }
        }
    if "removed" in d:
        return {"removed": {"block_hashes": [u64(h) for h in d["removed"]["block_hashes"]]}}
    return d  # anything else is passed as given (bad-input tests)


def router_event(e):
    out = {"worker_id": u64(e["worker_id"]), "storage_tier": e.get("storage_tier", "device")}
    if "residency_domain" in e:
        out["residency_domain"] = e["residency_domain"]
    ev = e["event"]
    out["event"] = {"event_id": u64(ev["event_id"]), "data": data(ev["data"]), "dp_rank": ev.get("dp_rank", 0)}
    return out


req = json.load(sys.stdin)
payload = msgpack.packb([router_event(e) for e in req["events"]], use_bin_type=True)
now_ns = time.time_ns()
envelope = {
    "topic": "kv-events",
    "publisher_id": u64(req["publisher_id"]),
    "sequence": u64(req["sequence"]),
    "published_at": now_ns // 1_000_000,
    "payload": payload,
    "published_at_ns": now_ns,
}
sys.stdout.write(msgpack.packb(envelope, use_bin_type=True).hex())
