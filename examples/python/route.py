"""The smallest useful kv-router client: a worker reports cached blocks, a
frontend asks where a prompt should go, then frees the request.

Run it against a router started with `make run BLOCK_SIZE=4` (see the README):

    mkdir -p /tmp/kvr-py
    protoc -I proto --python_out=/tmp/kvr-py --grpc_out=/tmp/kvr-py \
      --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin kvrouter/v1/router.proto
    /usr/bin/python3 examples/python/route.py 127.0.0.1:50051 /tmp/kvr-py

(/usr/bin/python3: Debian's python3-grpcio is installed for Debian's Python only.)
"""

import sys

import grpc

ADDRESS, STUBS = sys.argv[1], sys.argv[2]
sys.path.insert(0, STUBS)
from kvrouter.v1 import router_pb2 as pb  # noqa: E402  (generated into STUBS)
from kvrouter.v1 import router_pb2_grpc as pb_grpc  # noqa: E402

BLOCK_SIZE = 4  # must equal the router's --block-size

with grpc.insecure_channel(ADDRESS) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)  # fails here if no router listens at ADDRESS
    router = pb_grpc.KvRouterServiceStub(channel)

    # Worker 1 reports that it cached two blocks: tokens 1-4 and 5-8 (block ids are the engine's own).
    blocks = [pb.StoredBlock(block_hash=11, token_ids=[1, 2, 3, 4]), pb.StoredBlock(block_hash=12, token_ids=[5, 6, 7, 8])]
    event = pb.KvEvent(worker_id=1, event_id=1, stored=pb.BlocksStored(blocks=blocks))
    reply = router.IngestKvEvents(iter([pb.IngestKvEventsRequest(events=[event])]))
    print(f"events applied: {reply.applied}, rejected: {reply.rejected}")

    # Which worker should take a prompt that starts with those 8 tokens?
    decision = router.FindBestWorker(pb.FindBestWorkerRequest(token_ids=list(range(1, 10)), request_id="req-1"))
    print(f"route req-1 to worker {decision.worker.worker_id} (dp_rank {decision.worker.dp_rank}): "
          f"{decision.overlap_blocks} of {decision.prompt_blocks} prompt blocks are cached there")

    # The request finished: release its load.
    router.Free(pb.FreeRequest(request_id="req-1"))
    print("freed req-1")
