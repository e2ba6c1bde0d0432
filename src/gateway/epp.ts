// The endpoint picker: one Envoy ext_proc Process stream per HTTP request,
// following the Gateway API Inference Extension's EPP protocol
// (docs/proposals/004-endpoint-picker-protocol) in FULL_DUPLEX_STREAMED body
// mode. Request headers and body chunks are buffered until the body ends; the
// prompt is then tokenized and routed by the same router as FindBestWorker,
// and answered with a headers response (x-gateway-destination-endpoint, the
// same value in dynamic metadata envoy.lb) followed by the body, unchanged.
// The request's load is held until its response ends or the stream breaks.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { type HeaderMap, HeaderValueOption_HeaderAppendAction, type Metadata } from "../../gen/envoy/config/core/v3/base_pb.js";
import {
  type ProcessingRequest,
  type ProcessingResponse,
  ProcessingResponseSchema,
} from "../../gen/envoy/service/ext_proc/v3/external_processor_pb.js";
import { type WorkerKey, workerKeyString } from "../protocols/events.js";
import { RouterError } from "../router/errors.js";
import { IndexShardDownError } from "../indexer/types.js";
import type { AdmissionQueue } from "../router/admissionQueue.js";
import type { KvRouter } from "../router/router.js";
import { MalformedRequest } from "../protocols/grpcGlue.js";
import { decisionAttributes } from "../tracing/decisionAttributes.js";
import { EPP_PICK_SPAN, HTTP_REQUEST_METHOD, KV, URL_PATH } from "../tracing/names.js";
import type { RequestSpan } from "../tracing/requestSpan.js";
import type { Tracing } from "../tracing/tracing.js";
import { log } from "../util/log.js";
import type { BodyBudget } from "./bodyBudget.js";
import type { EppLoads, Load } from "./eppLoads.js";
import type { GatewayMetrics } from "./metrics.js";
import type { ModelCatalog } from "./models.js";
import { GatewayRefusal, type OpenAiPrompt, parseOpenAiRequest } from "./openaiRequest.js";

/** Names fixed by the EPP protocol. */
export const DESTINATION_HEADER = "x-gateway-destination-endpoint";
export const DESTINATION_NAMESPACE = "envoy.lb";
export const SUBSET_NAMESPACE = "envoy.lb.subset_hint";
export const SUBSET_KEY = "x-gateway-destination-endpoint-subset";
export const SERVED_KEY = "x-gateway-destination-endpoint-served";

export interface EppOptions {
  router: KvRouter;
  models: ModelCatalog;
  metrics: GatewayMetrics;
  /** Largest request body accepted (413 beyond). */
  maxBodyBytes: number;
  maxTokens: number;
  /** Most EPP requests holding load at once; more are shed with 429 (0 = no limit). */
  maxInFlight: number;
  /** Endpoints listed after the chosen one, for the proxy's retries. */
  fallbacks: number;
  /**
   * The router's admission queue: busy thresholds answer 429 at once, and past
   * the queue threshold a request waits there (as a gRPC FindBestWorker does).
   * Without it, requests are routed at once.
   */
  admission?: AdmissionQueue;
  /** Spans for picks and refusals, continuing the client's traceparent and handing it to the engine; undefined when off. */
  tracing?: Tracing;
}

/** What every stream of one EPP server shares. */
export interface EppShared {
  /** The EPP's requests holding load (--epp-max-in-flight). */
  loads: EppLoads;
  /** Request-body bytes buffered by all streams (--epp-max-buffered-bytes). */
  bodies: BodyBudget;
}

type Call = ServerDuplexStream<ProcessingRequest | MalformedRequest, ProcessingResponse>;

export function handleProcessStream(call: Call, opts: EppOptions, shared: EppShared): void {
  new EppStream(call, opts, shared);
}

/** A request-side protocol error: Envoy never sends it; the stream is answered 400 and ended. */
const protocolError = (message: string) => new GatewayRefusal(400, "malformed", message);

class EppStream {
  private headers = new Map<string, string>();
  /**
   * What the request side expects next. It moves as each message arrives, so the
   * message that ends the request is known at once and is the only one that routes:
   * a stream is routed at most once, whatever a client sends after.
   */
  private phase: "headers" | "body" | "ended" = "headers";
  private trailersSeen = false;
  private body: Buffer[] = [];
  /** Body bytes received (--max-body-bytes). */
  private bodyBytes = 0;
  /** Body bytes charged to the shared budget; given back when the body is dropped. */
  private charged = 0;
  /** The gateway's subset hint: the endpoints (ip:port) this request may go to. */
  private subset: ReadonlySet<string> | undefined;
  /** No more messages are read or handled: the stream broke, ended, or is refused. */
  private closed = false;
  /** The call is answered and ended. */
  private done = false;
  private held: { requestId: string; tokens: Uint32Array; loraName: string; primary: string; load: Load } | undefined;
  private prefillMarked = false;
  /** Messages are handled one after another: a request waiting in the admission queue holds back the rest of its stream. */
  private handled: Promise<void> = Promise.resolve();
  /** Aborts when the stream ends, breaks or is refused: a request still queued leaves the queue. */
  private readonly gone = new AbortController();
  /** The pick's span while it is open (tracing on); `traced`: one was started, so a stream has one at most. */
  private span: RequestSpan | undefined;
  private traced = false;

  constructor(
    private readonly call: Call,
    private readonly opts: EppOptions,
    private readonly shared: EppShared,
  ) {
    call.on("data", (msg: ProcessingRequest | MalformedRequest) => this.receive(msg));
    call.on("end", () => {
      this.gone.abort();
      void this.handled.then(() => {
        this.finish("stream_end");
        if (!this.done) call.end();
      });
    });
    call.on("error", (err) => {
      log.debug("ext_proc stream broke", { error: String(err) });
      this.finish("stream_error");
    });
    call.on("cancelled", () => this.finish("stream_cancelled"));
  }

  /** Checks a message as it arrives, before it waits its turn, then queues its handling. */
  private receive(msg: ProcessingRequest | MalformedRequest): void {
    if (this.closed) return;
    if (msg instanceof MalformedRequest) {
      this.stop();
      this.handled = this.handled.then(() => this.malformed(msg));
      return;
    }
    const open = this.phase !== "ended";
    const refusal = this.advance(msg);
    if (refusal !== undefined) {
      // Refused now, not in turn: a request queued for admission stops waiting, and nothing more is buffered.
      this.stop();
      this.handled = this.handled.then(() => this.refuse(refusal));
      return;
    }
    const endsRequest = open && this.phase === "ended";
    this.handled = this.handled.then(() => this.onMessage(msg, endsRequest));
  }

  /** Moves the request side on for one arriving message, charging its body bytes; says why it is refused, if it is. */
  private advance(msg: ProcessingRequest): GatewayRefusal | undefined {
    const r = msg.request;
    switch (r.case) {
      case "requestHeaders":
        if (this.phase !== "headers") return protocolError("request headers arrived twice");
        this.phase = r.value.endOfStream ? "ended" : "body";
        return undefined;
      case "requestBody": {
        if (this.phase === "headers") return protocolError("request body arrived before the request headers");
        if (this.phase === "ended") return protocolError("request body arrived after the request ended");
        const n = r.value.body.length;
        if (this.bodyBytes + n > this.opts.maxBodyBytes) {
          return new GatewayRefusal(413, "too_large", `request body is over ${this.opts.maxBodyBytes} bytes (--max-body-bytes)`);
        }
        if (!this.shared.bodies.take(n)) {
          // 503, not 429: the shortage is this router's memory, shared by every client, not
          // this client's rate; it passes as soon as other bodies are routed (clients retry 503).
          return new GatewayRefusal(
            503,
            "buffers_full",
            `the endpoint picker holds ${this.shared.bodies.used} bytes of request bodies; this body would pass ${this.shared.bodies.limit} (--epp-max-buffered-bytes)`,
          );
        }
        this.bodyBytes += n;
        this.charged += n;
        if (r.value.endOfStream) this.phase = "ended";
        return undefined;
      }
      case "requestTrailers":
        // Full-duplex mode sends trailers when the request had them: they end the body, or follow its end.
        if (this.phase === "headers") return protocolError("request trailers arrived before the request headers");
        if (this.trailersSeen) return protocolError("request trailers arrived twice");
        this.trailersSeen = true;
        this.phase = "ended";
        return undefined;
      default:
        return undefined;
    }
  }

  private async onMessage(msg: ProcessingRequest, endsRequest: boolean): Promise<void> {
    if (this.done || this.closed) return;
    try {
      await this.dispatch(msg, endsRequest);
    } catch (err) {
      if (err instanceof GatewayRefusal) return this.refuse(err);
      log.error("endpoint picker failed", { error: String((err as Error)?.stack ?? err) });
      this.refuse(new GatewayRefusal(500, "internal", `internal error: ${(err as Error)?.message ?? err}`));
    }
  }

  private async dispatch(msg: ProcessingRequest, endsRequest: boolean): Promise<void> {
    this.noteSubset(msg.metadataContext);
    const r = msg.request;
    switch (r.case) {
      case "requestHeaders":
        this.headers = headerMap(r.value.headers);
        // A request without a body (e.g. GET /v1/models) is placed by load alone.
        if (endsRequest) await this.route(undefined);
        return;
      case "requestBody": {
        const chunk = r.value.body;
        this.body.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        if (endsRequest) await this.routeBody();
        return;
      }
      case "requestTrailers":
        if (endsRequest) await this.routeBody();
        this.send({ response: { case: "requestTrailers", value: {} } });
        return;
      case "responseHeaders":
        this.noteServed(msg.metadataContext);
        this.send({ response: { case: "responseHeaders", value: { response: {} } } });
        if (r.value.endOfStream) this.release("response_end");
        return;
      case "responseBody":
        this.markPrefill();
        this.send({
          response: {
            case: "responseBody",
            value: { response: { bodyMutation: { mutation: { case: "streamedResponse", value: { body: r.value.body, endOfStream: r.value.endOfStream } } } } },
          },
        });
        if (r.value.endOfStream) this.release("response_end");
        return;
      case "responseTrailers":
        this.send({ response: { case: "responseTrailers", value: {} } });
        this.release("response_end");
        return;
      default:
        throw new GatewayRefusal(400, "malformed", "ProcessingRequest carries no request, headers, body or trailers");
    }
  }

  /** Routes the buffered body; its bytes stay charged until the copy sent back is written. */
  private async routeBody(): Promise<void> {
    const body = Buffer.concat(this.body);
    this.body = [];
    try {
      await this.route(body);
    } finally {
      this.dropBody();
    }
  }

  /** Tokenizes and routes the request, then answers headers (with the destination) and the body. */
  private async route(body: Buffer | undefined): Promise<void> {
    if (this.gone.signal.aborted) return; // the stream went away before its turn came
    const { router, metrics } = this.opts;
    this.startSpan();
    let tokens: Uint32Array = new Uint32Array(0);
    let loraName = "";
    if (body !== undefined && body.length > 0) {
      const req = parseOpenAiRequest(body);
      const model = this.opts.models.resolve(req.model);
      loraName = model.loraName;
      tokens = this.tokenize(req.prompt, model.tokenizer, req.model);
      if (tokens.length > this.opts.maxTokens) {
        throw new GatewayRefusal(400, "invalid", `the prompt has ${tokens.length} tokens; the limit is ${this.opts.maxTokens} (--max-tokens)`);
      }
    }
    if (this.opts.maxInFlight > 0) {
      const inFlight = this.shared.loads.count;
      if (inFlight >= this.opts.maxInFlight) throw new GatewayRefusal(429, "shed", `${inFlight} requests are in flight, the most --epp-max-in-flight allows`);
    }
    const allowed = this.candidates();
    const requestId = this.requestId();
    const route = { tokens, requestId, allowedWorkers: allowed, loraName };
    let decision;
    let queuedMs = 0;
    try {
      if (this.opts.admission) ({ decision, queuedMs } = await this.opts.admission.admit(route, this.gone.signal));
      else decision = router.findBestWorker(route);
    } catch (err) {
      if (err instanceof RouterError && err.code === "cancelled") return this.endSpanGone(); // the stream went away while queued
      if (err instanceof RouterError && err.code === "resource_exhausted") throw new GatewayRefusal(429, "shed", err.message);
      // The index lost a shard thread: this router cannot pick (the proxy's retry or another replica can).
      if (err instanceof IndexShardDownError) throw new GatewayRefusal(503, "index_down", err.message);
      throw err;
    }
    const span = this.span;
    if (span !== undefined) {
      span.setAttributes(decisionAttributes(decision, queuedMs));
      span.setAttributes({ [KV.requestId]: requestId, [KV.promptTokens]: tokens.length });
    }
    if (this.gone.signal.aborted) {
      router.free(requestId); // routed just as the stream went away: hold no load
      return this.endSpanGone();
    }
    const ordered = [decision.worker, ...decision.scores.map((s) => s.worker)];
    const endpoints = [...new Set(ordered.map((w) => router.addresses.get(w)!))].slice(0, 1 + this.opts.fallbacks);
    this.held = { requestId, tokens, loraName, primary: endpoints[0], load: this.shared.loads.hold(requestId) };
    metrics.eppRequests.inc({ outcome: "routed" });
    const value = endpoints.join(",");
    const setHeaders = [headerOption(DESTINATION_HEADER, value)];
    if (body !== undefined && body.length > 0) setHeaders.push(headerOption("content-length", String(body.length)));
    if (span !== undefined) {
      span.setAttribute(KV.endpoints, value);
      // The engine's spans join the trace as children of this pick (traceparent replaces the client's).
      this.opts.tracing!.inject(span, (name, v) => setHeaders.push(headerOption(name, v)));
    }
    this.send({
      response: { case: "requestHeaders", value: { response: { headerMutation: { setHeaders }, clearRouteCache: true } } },
      dynamicMetadata: { [DESTINATION_NAMESPACE]: { [DESTINATION_HEADER]: value } },
    });
    if (body !== undefined) {
      this.send({
        response: {
          case: "requestBody",
          value: { response: { bodyMutation: { mutation: { case: "streamedResponse", value: { body, endOfStream: true } } } } },
        },
      });
    }
    log.debug("epp routed", { request_id: requestId, endpoints: value, tokens: tokens.length, overlap_blocks: decision.overlapBlocks });
    if (span !== undefined) this.opts.tracing!.end(span);
    this.span = undefined;
  }

  /** Opens the pick's span (tracing on, once per stream), child of the trace context in the client's headers. */
  private startSpan(): void {
    const tracing = this.opts.tracing;
    if (tracing === undefined || this.traced) return;
    this.traced = true;
    const method = this.headers.get(":method");
    const path = this.headers.get(":path");
    this.span = tracing.startServerSpan(
      EPP_PICK_SPAN,
      { ...(method ? { [HTTP_REQUEST_METHOD]: method } : {}), ...(path ? { [URL_PATH]: path.split("?")[0] } : {}) },
      (name) => this.headers.get(name),
    );
  }

  /** The stream went away before its pick was answered. */
  private endSpanGone(): void {
    if (this.span === undefined) return;
    this.opts.tracing!.endError(this.span, "cancelled", "the ext_proc stream ended before the pick was answered");
    this.span = undefined;
  }

  private tokenize(prompt: OpenAiPrompt, tokenizer: ReturnType<ModelCatalog["resolve"]>["tokenizer"], model: string): Uint32Array {
    if (prompt.kind === "tokens") return Uint32Array.from(prompt.ids);
    if (tokenizer === undefined) {
      throw new GatewayRefusal(400, "no_tokenizer", `no tokenizer for model "${model}": start kv-router with --tokenizer DIR, or send the prompt as token ids`);
    }
    const before = tokenizer.cacheHits;
    let ids: number[];
    if (prompt.kind === "text") {
      ids = tokenizer.encode(prompt.text, true);
    } else {
      if (!tokenizer.hasChatTemplate) throw new GatewayRefusal(400, "no_chat_template", `${tokenizer.dir} has no chat template; chat requests cannot be tokenized`);
      let text: string;
      try {
        text = tokenizer.renderChat(prompt.messages, { addGenerationPrompt: prompt.addGenerationPrompt, tools: prompt.tools, extra: prompt.templateKwargs });
      } catch (err) {
        throw new GatewayRefusal(400, "template", `the chat template cannot render these messages: ${(err as Error).message}`);
      }
      // A rendered chat already holds its special tokens (vLLM: add_special_tokens=false for chat).
      ids = tokenizer.encode(text, false);
    }
    this.opts.metrics.tokenizations.inc({ cache: tokenizer.cacheHits > before ? "hit" : "miss" });
    return Uint32Array.from(ids);
  }

  /** The workers the request may go to: those with an address, within the gateway's subset if it sent one. */
  private candidates(): WorkerKey[] {
    const { addresses } = this.opts.router;
    const known = this.opts.router.knownWorkers();
    const subset = this.subset;
    const routable = addresses.entries().filter((e) => known.has(workerKeyString(e.worker)));
    const eligible = subset === undefined ? routable : routable.filter((e) => subset.has(e.address));
    if (eligible.length === 0) {
      throw new GatewayRefusal(
        503,
        "no_endpoint",
        subset === undefined
          ? "no worker with an address is known: register workers with an address (RegisterWorker address, --workers-file address)"
          : `none of the gateway's subset endpoints (${sample(subset)}) is a known worker`,
      );
    }
    return eligible.map((e) => e.worker);
  }

  private requestId(): string {
    const given = this.headers.get("x-request-id");
    if (given && given.length <= 256 && !this.opts.router.active.has(given)) return given;
    return `epp-${randomUUID()}`;
  }

  private noteSubset(md: Metadata | undefined): void {
    const ns = md?.filterMetadata[SUBSET_NAMESPACE];
    if (ns === undefined || this.subset !== undefined || !(SUBSET_KEY in ns)) return;
    // No hint can name more endpoints than the router can know; a longer one is refused unread.
    this.subset = new Set(stringList(ns[SUBSET_KEY], this.opts.router.maxAllowedWorkers));
  }

  /** The proxy may have retried on a fallback: the load moves to the endpoint that served. */
  private noteServed(md: Metadata | undefined): void {
    const served = md?.filterMetadata[DESTINATION_NAMESPACE]?.[SERVED_KEY];
    const held = this.held;
    if (typeof served !== "string" || held === undefined || served === held.primary) return;
    const worker = this.opts.router.addresses.find(served);
    if (worker === undefined) return;
    this.shared.loads.release(held.load);
    this.opts.router.findBestWorker({ tokens: held.tokens, requestId: held.requestId, allowedWorkers: [worker], loraName: held.loraName });
    held.load = this.shared.loads.hold(held.requestId);
    held.primary = served;
  }

  private markPrefill(): void {
    if (this.held === undefined || this.prefillMarked) return;
    this.prefillMarked = true;
    this.opts.router.markPrefillCompleted(this.held.requestId);
  }

  /** Frees the request's load once (response finished, or the stream ended, broke or was refused). */
  private release(why: string): void {
    const held = this.held;
    if (held === undefined) return;
    this.held = undefined;
    this.shared.loads.release(held.load);
    log.debug("epp request finished; load freed", { request_id: held.requestId, why });
  }

  /** Gives the buffered body's bytes back and drops the chunks, so they can be collected. */
  private dropBody(): void {
    this.body = [];
    this.shared.bodies.give(this.charged);
    this.charged = 0;
  }

  /** Reads no more messages and lets a queued request go; what the stream holds is released when its turn ends it. */
  private stop(): void {
    this.closed = true;
    this.gone.abort();
  }

  /** The stream is over, however it ended: it holds nothing from here on. */
  private finish(why: string): void {
    this.stop();
    this.release(why);
    this.dropBody();
  }

  private malformed(msg: MalformedRequest): void {
    if (this.done) return;
    this.opts.metrics.rejected.inc({ api: "epp", reason: "malformed" });
    this.done = true;
    this.finish("malformed");
    this.call.emit("error", { code: 3, details: msg.reason });
  }

  private refuse(refusal: GatewayRefusal): void {
    if (this.done) return;
    this.traceRefusal(refusal);
    this.opts.metrics.rejected.inc({ api: "epp", reason: refusal.reason });
    this.opts.metrics.eppRequests.inc({ outcome: String(refusal.status) });
    this.finish("refused");
    const body = JSON.stringify({ error: { message: refusal.message, type: refusal.reason, code: refusal.status } });
    this.send({
      response: {
        case: "immediateResponse",
        value: {
          status: { code: refusal.status },
          headers: { setHeaders: [headerOption("content-type", "application/json")] },
          body: Buffer.from(body),
          details: `kv-router: ${refusal.reason}`,
        },
      },
    });
    this.done = true;
    this.call.end();
  }

  /** A refusal ends the pick's span as an error; one refused before its pick began gets a span of its own. */
  private traceRefusal(refusal: GatewayRefusal): void {
    const tracing = this.opts.tracing;
    if (tracing === undefined) return;
    this.startSpan();
    if (this.span === undefined) return;
    tracing.endHttpError(this.span, refusal.status, refusal.reason, refusal.message);
    this.span = undefined;
  }

  private send(init: Parameters<typeof create<typeof ProcessingResponseSchema>>[1]): void {
    if (this.call.cancelled || this.call.destroyed) return;
    this.call.write(create(ProcessingResponseSchema, init));
  }
}

function headerOption(key: string, value: string) {
  return { header: { key, rawValue: Buffer.from(value) }, appendAction: HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD };
}

/** Header names are lower-case in ext_proc; values are in raw_value (older proxies: value). */
function headerMap(map: HeaderMap | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const h of map?.headers ?? []) out.set(h.key.toLowerCase(), h.rawValue.length > 0 ? Buffer.from(h.rawValue).toString("utf8") : h.value);
  return out;
}

/** The hint's endpoints (a list, or one comma-separated string); counted before any is read, refused past `max`. */
function stringList(v: JsonValue | undefined, max: number): string[] {
  const entries = Array.isArray(v) ? v : typeof v === "string" ? v.split(",", max + 1) : [];
  if (entries.length > max) {
    throw new GatewayRefusal(
      503,
      "subset_too_large",
      `the gateway's subset hint (${SUBSET_KEY}) lists more than ${max} endpoints, more than this router can know (--max-worker-ranks)`,
    );
  }
  return entries.filter((x): x is string => typeof x === "string").map((s) => s.trim()).filter((s) => s !== "");
}

/** A few of the subset's endpoints, for a message of bounded length. */
function sample(subset: ReadonlySet<string>): string {
  if (subset.size === 0) return "empty";
  const shown = [...subset].slice(0, 5).join(", ");
  return subset.size > 5 ? `${shown}, … ${subset.size} in all` : shown;
}

