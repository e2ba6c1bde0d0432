"""A Python kv-router client, as a Python frontend or worker sidecar would write it.

Usage: /usr/bin/python3 kvrouter_client.py ADDRESS STUBDIR [BLOCK_SIZE]

STUBDIR holds the stubs generated from proto/ by protoc + grpc_python_plugin
(kvrouter/v1/router_pb2.py, router_pb2_grpc.py). The script plays one fixed
scenario against the router at ADDRESS (which must use BLOCK_SIZE, default 16)
and prints what it saw as one JSON object on stdout; the test decides whether
the answers are right.

Scenario: three workers register; their KV events arrive over one
client-streaming IngestKvEvents call in three messages (one event is an
orphan, one is stale); prompts A and B are routed with explain; A's prefill
completes and A is freed; two malformed calls must come back INVALID_ARGUMENT.
"""

import json
import struct
import sys

import grpc
import xxhash
from google.protobuf.json_format import MessageToDict

ADDRESS, STUBDIR = sys.argv[1], sys.argv[2]
B = int(sys.argv[3]) if len(sys.argv) > 3 else 16
sys.path.insert(0, STUBDIR)
from kvrouter.v1 import router_pb2 as pb  # noqa: E402
from kvrouter.v1 import router_pb2_grpc as pb_grpc  # noqa: E402

W1, W2 = 1, 2
W3 = 2**64 - 1000  # a u64 worker id above 2^63: must survive every hop
PROMPT_A = list(range(1000, 1000 + 6 * B + 5))  # 6 full blocks and a 5-token tail
PROMPT_B = [(i * 2654435761 + 7) % 2**32 for i in range(6 * B)]  # many tokens above 2^31


def blocks(tokens):
    return [tokens[i : i + B] for i in range(0, len(tokens) - B + 1, B)]


def local_hash(block_tokens):
    """Dynamo's local block hash, computed on the client side (python3-xxhash)."""
    return xxhash.xxh3_64_intdigest(struct.pack("<%dI" % len(block_tokens), *block_tokens), seed=1337)


def stored(worker, event_id, chunks, first_hash, parent=None, dp_rank=0, as_hashes=False):
    """A stored event; the engine's own block ids are first_hash, first_hash+1, ..."""
    out = []
    for i, chunk in enumerate(chunks):
        if as_hashes:
            out.append(pb.StoredBlock(block_hash=first_hash + i, tokens_hash=local_hash(chunk)))
        else:
            out.append(pb.StoredBlock(block_hash=first_hash + i, token_ids=chunk))
    data = pb.BlocksStored(blocks=out)
    if parent is not None:
        data.parent_block_hash = parent
    return pb.KvEvent(worker_id=worker, dp_rank=dp_rank, event_id=event_id, stored=data)


def as_dict(msg):
    return MessageToDict(msg, preserving_proto_field_name=True, including_default_value_fields=True)


def event_stream():
    """Three messages on one IngestKvEvents stream, yielded lazily like a live feed."""
    a = blocks(PROMPT_A)
    yield pb.IngestKvEventsRequest(
        events=[
            stored(W1, 1, a[:4], 100),  # W1 holds A's blocks 0-3 (ids 100-103)
            stored(W2, 1, a[:2], 200),  # W2 holds A's blocks 0-1 (ids 200-201)
        ]
    )
    yield pb.IngestKvEventsRequest(
        events=[
            stored(W1, 2, a[4:6], 104, parent=103),  # W1 continues to all 6 blocks
            stored(W3, 1, blocks(PROMPT_B), 300, dp_rank=1, as_hashes=True),  # hashes computed here
        ]
    )
    yield pb.IngestKvEventsRequest(
        events=[
            pb.KvEvent(worker_id=W2, event_id=2, removed=pb.BlocksRemoved(block_hashes=[201])),  # W2 keeps block 0
            stored(W1, 3, a[:1], 900, parent=999),  # orphan: parent unknown -> rejected
            stored(W2, 1, a[:1], 500),  # replayed id -> stale
        ]
    )


def expect_invalid(call):
    try:
        call()
    except grpc.RpcError as err:
        return {"code": err.code().name, "details": err.details()}
    return {"code": "OK", "details": ""}


def main():
    out = {"block_size": B, "prompts": {"a": PROMPT_A, "b": PROMPT_B}}
    with grpc.insecure_channel(ADDRESS) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        stub = pb_grpc.KvRouterServiceStub(channel)

        out["register"] = [
            as_dict(stub.RegisterWorker(pb.RegisterWorkerRequest(worker_id=W1))),
            as_dict(stub.RegisterWorker(pb.RegisterWorkerRequest(worker_id=W2))),
            as_dict(stub.RegisterWorker(pb.RegisterWorkerRequest(worker_id=W3, dp_ranks=[0, 1], lease_ttl_seconds=60))),
        ]
        out["ingest"] = as_dict(stub.IngestKvEvents(event_stream()))

        out["route_a"] = as_dict(
            stub.FindBestWorker(pb.FindBestWorkerRequest(token_ids=PROMPT_A, request_id="py-a", explain=True))
        )
        out["route_b"] = as_dict(
            stub.FindBestWorker(pb.FindBestWorkerRequest(token_ids=PROMPT_B, request_id="py-b", explain=True))
        )
        out["workers_routed"] = as_dict(stub.ListWorkers(pb.ListWorkersRequest()))["workers"]

        out["prefill_a"] = as_dict(stub.MarkPrefillCompleted(pb.MarkPrefillCompletedRequest(request_id="py-a")))
        out["workers_prefilled"] = as_dict(stub.ListWorkers(pb.ListWorkersRequest()))["workers"]

        out["free"] = [
            as_dict(stub.Free(pb.FreeRequest(request_id="py-a"))),
            as_dict(stub.Free(pb.FreeRequest(request_id="py-a"))),  # idempotent: already gone
            as_dict(stub.Free(pb.FreeRequest(request_id="never-routed"))),
        ]
        out["workers_freed"] = as_dict(stub.ListWorkers(pb.ListWorkersRequest()))["workers"]

        out["invalid"] = {
            "empty_prompt": expect_invalid(lambda: stub.FindBestWorker(pb.FindBestWorkerRequest(token_ids=[]))),
            "short_block": expect_invalid(
                lambda: stub.IngestKvEvents(
                    iter([pb.IngestKvEventsRequest(events=[stored(W1, 4, [PROMPT_A[: B - 1]], 700)])])
                )
            ),
        }
        # The router kept serving after the bad calls.
        out["route_b_again"] = as_dict(stub.FindBestWorker(pb.FindBestWorkerRequest(token_ids=PROMPT_B)))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
