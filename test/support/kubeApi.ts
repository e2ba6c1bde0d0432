// A stand-in for the Kubernetes API server's pod list-and-watch, since no API
// server runs here. It answers with exactly the JSON the API reference
// publishes (kubernetes.io "API Concepts": efficient detection of changes,
// watch bookmarks, retrieving large results in chunks; core/v1 Pod and
// PodList, meta/v1 Status and WatchEvent):
// - GET /api/v1/namespaces/NS/pods?labelSelector&limit[&continue] →
//   {"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion","continue"?},"items":[...]}
//   (items without kind/apiVersion, as the server writes lists);
// - GET ...&watch=1&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=T →
//   200 with one JSON WatchEvent per line, {"type":"ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR","object"},
//   every event after RV first; a RV older than the kept history answers an
//   ERROR event whose object is a Status with code 410 (as the API server does
//   for watches), or, if asked, HTTP 410 with that Status;
// - a BOOKMARK's object is {"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion"}};
// - GET /apis/inference.networking.k8s.io/v1/namespaces/NS/inferencepools/NAME → the pool.
// Label selectors are the equality form (k=v,k2=v2), filtered server-side.
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface FakePod {
  name: string;
  labels?: Record<string, string>;
  ip?: string;
  ready?: boolean;
  annotations?: Record<string, string>;
  uid?: string;
  terminating?: boolean;
}

type Json = Record<string, unknown>;

interface HistoryEntry {
  rv: number;
  type: "ADDED" | "MODIFIED" | "DELETED";
  object: Json;
}

export const TOKEN = "fake-service-account-token";

export class FakeKubeApi {
  readonly namespace: string;
  /** Every request's path and query, in order. */
  readonly requests: { path: string; query: URLSearchParams }[] = [];
  private readonly pods = new Map<string, Json>();
  private history: HistoryEntry[] = [];
  private rv = 100;
  /** Events at or below this version are forgotten: a watch from before it gets 410. */
  private compactedThrough = 0;
  private readonly watchers = new Set<{ res: ServerResponse; selector: Record<string, string>; from: number }>();
  /** Answer the next expired watch with HTTP 410 instead of an ERROR event. */
  goneAsHttp = false;
  inferencePools = new Map<string, Json>();
  /** Raw lines to write to the next watch instead of events (hostile input tests). */
  rawNextWatch: string[] | undefined;
  private constructor(
    private readonly server: Server,
    namespace: string,
  ) {
    this.namespace = namespace;
  }

  static async start(namespace = "inference"): Promise<FakeKubeApi> {
    let api: FakeKubeApi | undefined;
    const server = createServer((req, res) => api!.handle(req, res));
    api = new FakeKubeApi(server, namespace);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return api;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** A kubeconfig for this server, as kubectl writes one (http needs insecure-skip-tls-verify in client-node). */
  kubeconfig(dir = mkdtempSync(join(tmpdir(), "kubeconfig-"))): string {
    const file = join(dir, "config");
    writeFileSync(
      file,
      [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: fake",
        "  cluster:",
        `    server: ${this.url}`,
        "    insecure-skip-tls-verify: true",
        "users:",
        "- name: router",
        "  user:",
        `    token: ${TOKEN}`,
        "contexts:",
        "- name: fake",
        "  context:",
        "    cluster: fake",
        "    user: router",
        `    namespace: ${this.namespace}`,
        "current-context: fake",
        "",
      ].join("\n"),
    );
    return file;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.res.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Adds or replaces a pod (ADDED or MODIFIED to watchers). */
  put(p: FakePod): void {
    const known = this.pods.has(p.name);
    const object = this.podObject(p, ++this.rv);
    this.pods.set(p.name, object);
    this.emit({ rv: this.rv, type: known ? "MODIFIED" : "ADDED", object });
  }

  delete(name: string): void {
    const object = this.pods.get(name);
    if (!object) return;
    this.pods.delete(name);
    const gone = structuredClone(object);
    (gone.metadata as Json).resourceVersion = String(++this.rv);
    this.emit({ rv: this.rv, type: "DELETED", object: gone });
  }

  /** Changes pods without telling watchers, and forgets the history: a watch from before now gets 410 Gone. */
  compactWith(change: () => void): void {
    const watchers = [...this.watchers];
    this.watchers.clear();
    change();
    this.watchers.clear();
    for (const w of watchers) this.watchers.add(w);
    this.compactedThrough = this.rv;
    this.history = [];
  }

  /** Breaks every open watch connection (a network failure, not a clean end). */
  breakWatches(): void {
    for (const w of this.watchers) w.res.socket?.destroy();
    this.watchers.clear();
  }

  /** Sends a BOOKMARK at the current version to every watcher. */
  bookmark(): void {
    for (const w of this.watchers) w.res.write(JSON.stringify({ type: "BOOKMARK", object: { kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: this.resourceVersion } } }) + "\n");
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  private podObject(p: FakePod, rv: number): Json {
    return {
      metadata: {
        name: p.name,
        namespace: this.namespace,
        uid: p.uid ?? `uid-${p.name}`,
        resourceVersion: String(rv),
        labels: p.labels ?? {},
        ...(p.annotations ? { annotations: p.annotations } : {}),
        ...(p.terminating ? { deletionTimestamp: "2026-12-04T10:00:00Z" } : {}),
      },
      spec: { containers: [{ name: "vllm", image: "vllm/vllm-openai:latest", ports: [{ containerPort: 8000, protocol: "TCP" }] }] },
      status: {
        phase: p.ready ? "Running" : "Pending",
        conditions: [
          { type: "PodScheduled", status: "True" },
          { type: "Ready", status: p.ready ? "True" : "False" },
        ],
        ...(p.ip ? { podIP: p.ip, podIPs: [{ ip: p.ip }] } : {}),
      },
    };
  }

  private emit(entry: HistoryEntry): void {
    this.history.push(entry);
    for (const w of this.watchers) if (matches(entry.object, w.selector)) w.res.write(JSON.stringify({ type: entry.type, object: entry.object }) + "\n");
  }

  private status(res: ServerResponse, code: number, reason: string, message: string): void {
    res.writeHead(code, { "content-type": "application/json" });
    res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code }));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://x");
    this.requests.push({ path: url.pathname, query: url.searchParams });
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return this.status(res, 401, "Unauthorized", "Unauthorized");
    const pool = /^\/apis\/inference\.networking\.k8s\.io\/v1\/namespaces\/([^/]+)\/inferencepools\/([^/]+)$/.exec(url.pathname);
    if (pool) {
      const o = pool[1] === this.namespace ? this.inferencePools.get(pool[2]) : undefined;
      if (!o) return this.status(res, 404, "NotFound", `inferencepools.inference.networking.k8s.io "${pool[2]}" not found`);
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(JSON.stringify(o));
    }
    if (url.pathname !== `/api/v1/namespaces/${this.namespace}/pods`) return this.status(res, 404, "NotFound", "the server could not find the requested resource");
    const selector = parseSelector(url.searchParams.get("labelSelector") ?? "");
    if (url.searchParams.get("watch") === "1" || url.searchParams.get("watch") === "true") return this.watch(url.searchParams, selector, res);
    this.list(url.searchParams, selector, res);
  }

  private list(q: URLSearchParams, selector: Record<string, string>, res: ServerResponse): void {
    const all = [...this.pods.values()].filter((p) => matches(p, selector)).sort((a, b) => String((a.metadata as Json).name).localeCompare(String((b.metadata as Json).name)));
    const limit = Number(q.get("limit") ?? 0) || all.length;
    // The continue token: the list's version and the offset (opaque to clients).
    const [rvText, offsetText] = (q.get("continue") ?? `${this.rv}:0`).split(":");
    if (Number(rvText) < this.compactedThrough && q.has("continue")) {
      return this.status(res, 410, "Expired", "The provided continue parameter is too old to display a consistent list result.");
    }
    const offset = Number(offsetText);
    const items = all.slice(offset, offset + limit);
    const more = offset + limit < all.length;
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        kind: "PodList",
        apiVersion: "v1",
        metadata: { resourceVersion: rvText, ...(more ? { continue: `${rvText}:${offset + limit}`, remainingItemCount: all.length - offset - limit } : {}) },
        items,
      }),
    );
  }

  private watch(q: URLSearchParams, selector: Record<string, string>, res: ServerResponse): void {
    const from = Number(q.get("resourceVersion") ?? this.rv);
    if (from < this.compactedThrough) {
      const message = `too old resource version: ${from} (${this.compactedThrough})`;
      if (this.goneAsHttp) {
        this.goneAsHttp = false;
        return this.status(res, 410, "Expired", message);
      }
      res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
      res.write(JSON.stringify({ type: "ERROR", object: { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason: "Expired", code: 410 } }) + "\n");
      return void res.end();
    }
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    if (this.rawNextWatch) {
      for (const line of this.rawNextWatch) res.write(line);
      this.rawNextWatch = undefined;
    }
    for (const e of this.history) if (e.rv > from && matches(e.object, selector)) res.write(JSON.stringify({ type: e.type, object: e.object }) + "\n");
    const w = { res, selector, from };
    this.watchers.add(w);
    res.on("close", () => this.watchers.delete(w));
  }
}

function parseSelector(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",").filter((s) => s !== "")) {
    const [k, v] = part.split("=");
    out[k] = v ?? "";
  }
  return out;
}

function matches(o: Json, selector: Record<string, string>): boolean {
  const labels = ((o.metadata as Json).labels ?? {}) as Record<string, string>;
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
