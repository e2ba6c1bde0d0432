// `node --import tsx bench/sharedReads.run.ts [entries] [queries] [rounds]`:
// bench/sharedReads.bench.ts on the Mooncake index of the index bench (64
// workers, block 64), printed as a table (also part of `make bench`).
import { availableParallelism, cpus } from "node:os";
import { runSharedReadsBench } from "./sharedReads.bench.js";
import { mooncake } from "./workload.js";

const entries = Number(process.argv[2] ?? 500_000);
const queries = Number(process.argv[3] ?? 2000);
const rounds = Number(process.argv[4] ?? 3);
console.log(`${availableParallelism()} cores (${cpus()[0]?.model ?? "?"}), node ${process.version}, ${process.arch}; Mooncake index of ${entries} entries, ${queries} prompts of 8,192 tokens, ${rounds} rounds`);
const r = await runSharedReadsBench(mooncake(entries), entries, queries, rounds);
const f = (x: number, d = 1) => x.toFixed(d).padStart(7);
for (const [name, { asked, read, summary: s }] of Object.entries(r.byShards)) {
  console.log(`\n${name} (${r.cores} cores), medians of ${rounds} rounds; us`);
  console.log(`${"".padEnd(26)} idle p50 idle p99 busy p50 busy p99  busy p99/idle p99  answers read / asked`);
  for (const [mode, rows] of [["asked", asked], ["read", read]] as const) {
    const label = mode === "read" ? "read shared memory" : "ask the shard (before)";
    console.log(
      `${label.padEnd(26)} ${f(s[`${mode}IdleP50`])}  ${f(s[`${mode}IdleP99`])}  ${f(s[`${mode}BusyP50`])}  ${f(s[`${mode}BusyP99`])}  ${f(s[`${mode}BusyP99VsIdle`], 2)}x  ${rows.reduce((n, x) => n + x.read, 0)} / ${rows.reduce((n, x) => n + x.asked, 0)}`,
    );
  }
  console.log(`read / asked: idle p99 ${(s.readIdleP99 / s.askedIdleP99).toFixed(2)}x, busy p99 ${(s.readBusyP99 / s.askedBusyP99).toFixed(2)}x`);
}
