#!/usr/bin/python3
"""The bytes a Dynamo worker publishes as forward-pass metrics (FPM), for kv-router tests.

Written from Dynamo's definitions (docs/dynamo.md cites each), with Debian's python3-msgpack:
- components/src/dynamo/common/forward_pass_metrics.py: ForwardPassMetrics is a msgspec.Struct
  (default, map encoding) with fields, in order: version (FPM_VERSION = 1), worker_id (str: the
  worker's runtime connection_id), dp_rank, counter_id, wall_time (float), scheduled_requests
  (ScheduledRequestMetrics: num_prefill_requests, sum_prefill_tokens, var_prefill_length,
  sum_prefill_kv_tokens, num_decode_requests, sum_decode_kv_tokens, var_decode_kv_tokens) and
  queued_requests (QueuedRequestMetrics: num_prefill_requests, sum_prefill_tokens,
  var_prefill_length, num_decode_requests, sum_decode_kv_tokens, var_decode_kv_tokens).
  lib/llm/src/fpm_publisher.rs (ForwardPassMetricsSer, rmp-serde struct-map) writes the same map.
  msgspec and rmp-serde write integers in their smallest form and floats as float64, as
  msgpack.packb does here.
- lib/runtime/src/transports/event_plane (EventPublisher::publish_bytes): the payload bytes go
  unchanged into the EventEnvelope {topic, publisher_id, sequence, published_at, payload (bin),
  published_at_ns}, rmp-serde named.

Used two ways:
- as a script: stdin JSON {"publisher_id", "sequence", "fpm": spec} -> stdout the envelope as hex;
- as a module: forward_pass_metrics(spec) -> the payload bytes (test/python/dynamo_zmq_publisher.py).
spec: {"worker_id": "123", "dp_rank": 0, "counter_id": 1, "wall_time": 0.02,
       "scheduled": {field: value, ...}, "queued": {field: value, ...}, "version": 1 (optional)}.
"""

import json
import sys
import time

import msgpack

FPM_TOPIC = "forward-pass-metrics"
FPM_VERSION = 1

SCHEDULED = [
    ("num_prefill_requests", 0),
    ("sum_prefill_tokens", 0),
    ("var_prefill_length", 0.0),
    ("sum_prefill_kv_tokens", 0),
    ("num_decode_requests", 0),
    ("sum_decode_kv_tokens", 0),
    ("var_decode_kv_tokens", 0.0),
]
QUEUED = [
    ("num_prefill_requests", 0),
    ("sum_prefill_tokens", 0),
    ("var_prefill_length", 0.0),
    ("num_decode_requests", 0),
    ("sum_decode_kv_tokens", 0),
    ("var_decode_kv_tokens", 0.0),
]


def _struct(fields, given):
    return {name: type(default)(given.get(name, default)) for name, default in fields}


def forward_pass_metrics(spec):
    fpm = {
        "version": spec.get("version", FPM_VERSION),
        "worker_id": str(spec["worker_id"]),
        "dp_rank": int(spec.get("dp_rank", 0)),
        "counter_id": int(spec.get("counter_id", 0)),
        "wall_time": float(spec.get("wall_time", 0.0)),
        "scheduled_requests": _struct(SCHEDULED, spec.get("scheduled", {})),
        "queued_requests": _struct(QUEUED, spec.get("queued", {})),
    }
    return msgpack.packb(fpm, use_bin_type=True)


def envelope(publisher_id, sequence, payload):
    now_ns = time.time_ns()
    return msgpack.packb(
        {
            "topic": FPM_TOPIC,
            "publisher_id": int(publisher_id),
            "sequence": int(sequence),
            "published_at": now_ns // 1_000_000,
            "payload": payload,
            "published_at_ns": now_ns,
        },
        use_bin_type=True,
    )


if __name__ == "__main__":
    req = json.load(sys.stdin)
    sys.stdout.write(envelope(req["publisher_id"], req["sequence"], forward_pass_metrics(req["fpm"])).hex())
