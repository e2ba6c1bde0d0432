// Span and attribute names. The rpc.*, error.type, http.* and url.* keys are
// OpenTelemetry's semantic conventions, so tracing back ends show them as
// they show any RPC; kv-router's own facts go under the kvrouter. prefix.

/** Semantic-convention keys. */
export const RPC_SYSTEM = "rpc.system";
export const RPC_SERVICE = "rpc.service";
export const RPC_METHOD = "rpc.method";
export const RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code";
export const RPC_CONNECT_ERROR_CODE = "rpc.connect_rpc.error_code";
export const ERROR_TYPE = "error.type";
export const HTTP_REQUEST_METHOD = "http.request.method";
export const HTTP_RESPONSE_STATUS_CODE = "http.response.status_code";
export const URL_PATH = "url.path";

/** rpc.system values: gRPC, and the Connect protocol of --http-port. */
export type RpcSystem = "grpc" | "connect_rpc";

/** kv-router's own keys. */
export const KV = {
  /** The chosen worker: its id (a u64, so a decimal string) and data-parallel rank. */
  workerId: "kvrouter.worker.id",
  dpRank: "kvrouter.worker.dp_rank",
  /** Leading prompt blocks cached on the chosen worker's GPU, of the prompt's blocks. */
  overlapBlocks: "kvrouter.overlap_blocks",
  promptBlocks: "kvrouter.prompt_blocks",
  /** Of overlap_blocks, those assumed cached by predict-on-route. */
  predictedBlocks: "kvrouter.predicted_blocks",
  /** Time the request waited in the admission queue (0: admitted at once). */
  queueWaitMs: "kvrouter.queue.wait_ms",
  /** Workers scored. */
  candidates: "kvrouter.candidates",
  /** The chosen worker's cost breakdown (scheduler/costFunction.ts Score; lower logit wins). */
  costLogit: "kvrouter.cost.logit",
  costPrefillBlocks: "kvrouter.cost.prefill_blocks",
  costDecodeBlocks: "kvrouter.cost.decode_blocks",
  /** Prompt blocks found on the chosen worker's lower tiers beyond its GPU match. */
  hostOverlapBlocks: "kvrouter.cost.host_overlap_blocks",
  diskOverlapBlocks: "kvrouter.cost.disk_overlap_blocks",
  externalOverlapBlocks: "kvrouter.cost.external_overlap_blocks",
  requestId: "kvrouter.request_id",
  /** Free / MarkPrefillCompleted: whether the request was active. */
  found: "kvrouter.found",
  promptTokens: "kvrouter.prompt_tokens",
  /** EPP: the endpoints answered, chosen one first, then fallbacks. */
  endpoints: "kvrouter.epp.endpoints",
} as const;

/** The EPP's span: one per pick (or refusal) of an HTTP request Envoy hands over. */
export const EPP_PICK_SPAN = "kvrouter.epp.pick";
