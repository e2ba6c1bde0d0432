// The house rules, checked by `make check-layers` (part of `make test`): src/ is a stack of
// layers, bottom first; a folder imports only from its own layer or below, and no files and no
// folders import each other in a loop. docs/ARCHITECTURE.md explains each layer.
const LAYERS = [
  ["util"], // logging, threads, small helpers (and gen/, the generated protobuf types)
  ["protocols"], // wire formats: event types and batch layout, proto glue, Dynamo's codecs and names
  ["hashing", "nats"], // block hashing; the NATS connection
  ["decoding"], // hot-path wire decoders: IngestKvEvents bytes to hashed flat batches (used by the index's shard threads too)
  ["indexer"], // the radix index: which worker holds which blocks
  ["scheduler", "workers"], // cost function and load accounting; worker identities and addresses
  ["router"], // routing, ingest, membership, admission
  ["metrics", "tracing"], // Prometheus metrics, the metered index decorator; OpenTelemetry spans
  ["discovery"], // worker registries (etcd, NATS KV, files)
  ["sources"], // event planes (NATS, JetStream, ZeroMQ), one adapter per format
  ["server", "client"], // the gRPC service; our own gRPC client
  ["http", "gateway"], // Connect HTTP/JSON; the Envoy endpoint picker and scorer API
  ["app", "simulate", "loadgen"], // start-up wiring; the simulator; load generators
  ["cli"], // flags and subcommands
];

const folder = (name) => `^src/${name}/`;
const upward = [];
LAYERS.forEach((layer, i) => {
  const above = LAYERS.slice(i + 1).flat();
  for (const name of layer) {
    const peers = layer.filter((other) => other !== name);
    const forbidden = [...above, ...peers];
    if (forbidden.length === 0) continue;
    upward.push({
      name: `layer-${name}`,
      comment: `src/${name}/ imports only from its layer's own folder or the layers below it (.dependency-cruiser.cjs)`,
      severity: "error",
      from: { path: folder(name) },
      to: { path: `^src/(${forbidden.join("|")})/` },
    });
  }
});

module.exports = {
  forbidden: [
    ...upward,
    {
      name: "no-circular",
      comment: "files that import each other in a loop (move what they share into a lower module)",
      severity: "error",
      from: { path: "^src/" },
      to: { circular: true },
    },
    {
      name: "src-not-from-tests",
      comment: "src/ must not import tests, benchmarks or scripts",
      severity: "error",
      from: { path: "^src/" },
      to: { path: "^(test|bench|scripts)/" },
    },
    {
      name: "known-folder",
      comment: "every folder of src/ has a layer in .dependency-cruiser.cjs",
      severity: "error",
      from: { path: "^src/", pathNot: `^src/(${LAYERS.flat().join("|")})/` },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist)/" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
