// Session affinity: requests of one session (a conversation, an agent run)
// stay on the worker that took the previous one while its cost stays within
// `slack` of the best candidate's; past that the session moves. Bindings are
// TTL'd from their last use and bounded in number (oldest dropped first).
// Dynamo's modes replace the slack rule when given: `hard` keeps a session on
// its worker while the worker is a candidate; `soft` lets a policy other than
// the cost function choose another (and the session moves with it).

interface Binding {
  workerKey: string;
  expiresAt: number;
}

export type AffinityOutcome = "new" | "kept" | "broken";

/** Dynamo's --router-session-affinity-mode. */
export const SESSION_AFFINITY_MODES = ["hard", "soft"] as const;
export type SessionAffinityMode = (typeof SESSION_AFFINITY_MODES)[number];

export class SessionAffinity {
  /** Insertion order = last-use order (a use re-inserts), so the oldest is first. */
  private readonly bindings = new Map<string, Binding>();

  constructor(
    readonly slack: number,
    private readonly ttlMs: number,
    private readonly maxSessions: number,
    private readonly now: () => number,
  ) {}

  get size(): number {
    return this.bindings.size;
  }

  /** The worker the session is bound to, if the binding is still live. */
  boundWorker(sessionId: string): string | undefined {
    const b = this.bindings.get(sessionId);
    if (b === undefined) return undefined;
    if (b.expiresAt <= this.now()) {
      this.bindings.delete(sessionId);
      return undefined;
    }
    return b.workerKey;
  }

  bind(sessionId: string, workerKey: string): void {
    this.bindings.delete(sessionId);
    this.bindings.set(sessionId, { workerKey, expiresAt: this.now() + this.ttlMs });
    if (this.bindings.size > this.maxSessions) this.bindings.delete(this.bindings.keys().next().value!);
  }

  /** Drops expired bindings (periodic upkeep); returns how many. */
  expire(): number {
    const now = this.now();
    let n = 0;
    for (const [id, b] of this.bindings) {
      if (b.expiresAt <= now) {
        this.bindings.delete(id);
        n++;
      }
    }
    return n;
  }

  forgetWorker(matches: (workerKey: string) => boolean): void {
    for (const [id, b] of this.bindings) if (matches(b.workerKey)) this.bindings.delete(id);
  }
}
