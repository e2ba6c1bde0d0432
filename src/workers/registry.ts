// Worker membership by lease: a registered worker stays known while it
// re-registers or sends KeepAlive within its TTL; when the lease runs out the
// router forgets the worker and its cached blocks.

export interface Registration {
  workerId: bigint;
  dpRanks: number[];
  ttlMs: number;
  expiresAt: number;
}

export class WorkerRegistry {
  private readonly leases = new Map<bigint, Registration>();
  /** (worker, dp_rank) pairs over all leases. */
  pairCount = 0;
  /** Bumped whenever a lease is added, changed or dropped (keep-alives leave it). */
  version = 0;

  constructor(private readonly now: () => number = Date.now) {}

  register(workerId: bigint, dpRanks: number[], ttlMs: number): Registration {
    const reg: Registration = { workerId, dpRanks, ttlMs, expiresAt: this.now() + ttlMs };
    this.pairCount += dpRanks.length - (this.leases.get(workerId)?.dpRanks.length ?? 0);
    this.leases.set(workerId, reg);
    this.version++;
    return reg;
  }

  /** Renews a lease; undefined when the worker holds none. */
  keepAlive(workerId: bigint): Registration | undefined {
    const reg = this.leases.get(workerId);
    if (reg !== undefined) reg.expiresAt = this.now() + reg.ttlMs;
    return reg;
  }

  deregister(workerId: bigint): boolean {
    this.pairCount -= this.leases.get(workerId)?.dpRanks.length ?? 0;
    const had = this.leases.delete(workerId);
    if (had) this.version++;
    return had;
  }

  get(workerId: bigint): Registration | undefined {
    return this.leases.get(workerId);
  }

  all(): Registration[] {
    return [...this.leases.values()];
  }

  /** Removes and returns the workers whose lease ran out. */
  expire(): bigint[] {
    const now = this.now();
    const expired: bigint[] = [];
    for (const reg of this.leases.values()) if (reg.expiresAt <= now) expired.push(reg.workerId);
    for (const id of expired) this.deregister(id);
    return expired;
  }
}
