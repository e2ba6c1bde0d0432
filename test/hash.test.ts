// Block hashes checked against an independent implementation: Debian's
// python3-xxhash (the C xxHash library), fed the same cases as
// src/hashing/blockHash.ts and the `kv-router hash` subcommand.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { hashPrompt, hashPromptEagle, localBlockHash, localHashSeed, sequenceHash } from "../src/hashing/blockHash.js";
import { seededRandom } from "../src/util/random.js";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = "/usr/bin/python3"; // Debian's, which sees python3-xxhash (the pyenv python3 on PATH does not)

// The Python side: the hashing rules written out from their description in
// ROUTER.md. Input and output are JSON; u64 values travel as decimal strings.
const PY_REFERENCE = String.raw`
import json, struct, sys, xxhash
MASK = (1 << 64) - 1
def seed_for(lora, ns=""):
    # Dynamo's compute_salt_hash (lib/kv-hashing/src/salt.rs): wrapping adds, empty = absent.
    seed = 1337
    if lora != "":
        seed += xxhash.xxh3_64_intdigest(lora.encode("utf-8"), seed=0)
    if ns != "":
        seed += xxhash.xxh3_64_intdigest(ns.encode("utf-8"), seed=1)
    return seed & MASK
def local(tokens, seed, mm=()):
    data = struct.pack("<%dI" % len(tokens), *tokens)
    data += b"".join(struct.pack("<Q", h) for h in sorted(mm))
    return xxhash.xxh3_64_intdigest(data, seed=seed)
def prompt(tokens, b, lora, ns="", eagle=False):
    # Eagle (Dynamo's is_eagle): windows of b + 1 tokens, stride b.
    seed = seed_for(lora, ns)
    locs, seqs, parent = [], [], None
    window = b + 1 if eagle else b
    for i in range((max(len(tokens) - 1, 0) if eagle else len(tokens)) // b):
        h = local(tokens[i * b:i * b + window], seed)
        parent = h if parent is None else xxhash.xxh3_64_intdigest(struct.pack("<QQ", parent, h), seed=1337)
        locs.append(str(h)); seqs.append(str(parent))
    return {"local": locs, "sequence": seqs}
req = json.load(sys.stdin)
out = {
    "prompts": [prompt(c["tokens"], c["block_size"], c.get("lora", ""), c.get("ns", "")) for c in req["prompts"]],
    "eagle": [prompt(c["tokens"], c["block_size"], c.get("lora", ""), c.get("ns", ""), True) for c in req["eagle"]],
    "seeds": [str(seed_for(n)) for n in req["lora_names"]],
    "mm": [str(local(c["tokens"], seed_for(c.get("lora", "")), [int(h) for h in c["mm"]])) for c in req["mm"]],
}
json.dump(out, sys.stdout)
`;

interface PromptCase {
  tokens: number[];
  block_size: number;
  lora?: string;
  /** Dynamo's cache_namespace. */
  ns?: string;
}
interface MmCase {
  tokens: number[];
  mm: string[];
  lora?: string;
}
interface Reference {
  prompts: { local: string[]; sequence: string[] }[];
  eagle: { local: string[]; sequence: string[] }[];
  seeds: string[];
  mm: string[];
}

function pythonReference(prompts: PromptCase[], loraNames: string[], mm: MmCase[], eagle: PromptCase[]): Reference {
  const r = spawnSync(PYTHON, ["-c", PY_REFERENCE], {
    input: JSON.stringify({ prompts, lora_names: loraNames, mm, eagle }),
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `python reference failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Reference;
}

const rand = seededRandom(20261125);
const u32 = () => Math.floor(rand() * 2 ** 32);
const u64 = () => (BigInt(u32()) << 32n) | BigInt(u32());
/** Random tokens, salted with values around the u32 edges (2^31 and 2^32-1) where a signed/unsigned mix-up shows. */
function randomTokens(n: number): number[] {
  const edges = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1, 2 ** 32 - 2, 2 ** 32 - 1];
  return Array.from({ length: n }, (_, i) => (i % 5 === 0 ? edges[(i / 5) % edges.length] : u32()));
}

const LORA_NAMES = ["my-lora", "adapter/v2", "ünïcödé-ådäptér", "日本語のアダプタ", "a", " "];
const promptCases: PromptCase[] = [
  { tokens: Array.from({ length: 64 }, (_, i) => i), block_size: 64 },
  ...[1, 2, 4, 16, 32, 64, 128].flatMap((b) => [
    { tokens: randomTokens(b * 5), block_size: b },
    { tokens: randomTokens(b * 3 + Math.max(1, b - 1)), block_size: b }, // trailing partial block
    { tokens: Array.from({ length: b * 4 }, () => 2 ** 31 + Math.floor(rand() * 2 ** 31)), block_size: b }, // all > 2^31
  ]),
  ...LORA_NAMES.map((lora) => ({ tokens: randomTokens(16 * 4 + 3), block_size: 16, lora })),
  { tokens: randomTokens(10), block_size: 16 }, // shorter than one block
  // Cache namespaces, alone and with an adapter; the done-means vector of issue #11 first.
  { tokens: [0, 1, 2, 3], block_size: 4, ns: "tenant-a" },
  { tokens: randomTokens(16 * 3), block_size: 16, ns: "tenant-b/ünï" },
  { tokens: randomTokens(16 * 3), block_size: 16, ns: "tenant-a", lora: "my-lora" },
];
const mmCases: MmCase[] = [
  { tokens: randomTokens(16), mm: [u64(), u64(), u64()].map(String) },
  { tokens: randomTokens(16), mm: [(1n << 64n) - 1n, 0n, 1n << 63n, 5n].map(String) },
  { tokens: randomTokens(64), mm: [u64()].map(String) },
  { tokens: randomTokens(16), mm: [u64(), u64()].map(String), lora: "my-lora" },
  { tokens: randomTokens(16), mm: [42n, 42n, 7n].map(String) }, // duplicates are kept
];
/** Eagle windows: exactly n blocks + 1 token, one token short of that, a bare block, a LoRA and a namespace. */
const eagleCases: PromptCase[] = [
  { tokens: randomTokens(4 * 3 + 1), block_size: 4 },
  { tokens: randomTokens(4 * 3), block_size: 4 },
  { tokens: randomTokens(16), block_size: 16 },
  { tokens: randomTokens(64 * 2 + 1), block_size: 64, lora: "my-lora", ns: "tenant-a" },
  { tokens: [], block_size: 4 },
];
const ref = pythonReference(promptCases, ["", ...LORA_NAMES], mmCases, eagleCases);

describe("block hashing matches python3-xxhash", () => {
  it("reproduces Dynamo's reference vector: tokens 0..63, block size 64 → 0x304d910e689e42bf", () => {
    const tokens = Array.from({ length: 64 }, (_, i) => i);
    assert.equal(localBlockHash(tokens), 0x304d910e689e42bfn);
    assert.equal(hashPrompt(tokens, 64).local[0], 0x304d910e689e42bfn);
    assert.equal(BigInt(ref.prompts[0].local[0]), 0x304d910e689e42bfn, "the Python reference agrees");
  });

  it("local and chained sequence hashes agree for every block size and token set", () => {
    promptCases.forEach((c, i) => {
      const ts = hashPrompt(c.tokens, c.block_size, c.lora ?? "", c.ns ?? "");
      const expected = ref.prompts[i];
      const what = `case ${i} (block size ${c.block_size}, ${c.tokens.length} tokens, lora "${c.lora ?? ""}", ns "${c.ns ?? ""}")`;
      assert.equal(ts.local.length, Math.floor(c.tokens.length / c.block_size), `${what}: one hash per full block`);
      assert.deepEqual(ts.local.map(String), expected.local, `${what}: local hashes`);
      assert.deepEqual(ts.sequence.map(String), expected.sequence, `${what}: sequence hashes`);
    });
  });

  it("Eagle windows (block_size + 1 tokens, stride block_size) agree, as Dynamo hashes for is_eagle", () => {
    eagleCases.forEach((c, i) => {
      const ts = hashPromptEagle(c.tokens, c.block_size, c.lora ?? "", c.ns ?? "");
      const what = `eagle case ${i} (block size ${c.block_size}, ${c.tokens.length} tokens)`;
      assert.equal(ts.local.length, Math.max(0, Math.floor((c.tokens.length - 1) / c.block_size)), `${what}: blocks need n * B + 1 tokens`);
      assert.deepEqual(ts.local.map(String), ref.eagle[i].local, `${what}: local hashes`);
      assert.deepEqual(ts.sequence.map(String), ref.eagle[i].sequence, `${what}: sequence hashes`);
    });
  });

  it("sequence hash chains: block 0 is its local hash, block i hashes (parent, local)", () => {
    const c = promptCases[1];
    const { local, sequence } = hashPrompt(c.tokens, c.block_size);
    assert.ok(local.length >= 4);
    assert.equal(sequence[0], local[0]);
    for (let i = 1; i < local.length; i++) assert.equal(sequenceHash(sequence[i - 1], local[i]), sequence[i]);
    assert.equal(sequenceHash(undefined, local[0]), local[0]);
  });

  it("a trailing partial block is ignored", () => {
    for (const c of promptCases) {
      const full = c.tokens.length - (c.tokens.length % c.block_size);
      const withTail = hashPrompt(c.tokens, c.block_size, c.lora ?? "", c.ns ?? "");
      const truncated = hashPrompt(c.tokens.slice(0, full), c.block_size, c.lora ?? "", c.ns ?? "");
      assert.deepEqual(withTail, truncated);
    }
    assert.deepEqual(hashPrompt([1, 2, 3], 4), { local: [], sequence: [] });
  });

  it("LoRA seed = 1337 + XXH3-64(seed 0, UTF-8 name), wrapping u64; empty name = base model", () => {
    const names = ["", ...LORA_NAMES];
    names.forEach((name, i) => assert.equal(localHashSeed(name).toString(), ref.seeds[i], `seed of "${name}"`));
    assert.equal(localHashSeed(""), 1337n);
    for (const name of names) assert.ok(localHashSeed(name) < 1n << 64n, `seed of "${name}" stays a u64`);
    // Every block changes with an adapter.
    const tokens = randomTokens(64);
    const base = hashPrompt(tokens, 16);
    const lora = hashPrompt(tokens, 16, "my-lora");
    base.local.forEach((h, i) => assert.notEqual(h, lora.local[i], `block ${i}`));
  });

  it("cache namespace seed = 1337 + XXH3-64(lora, seed 0) + XXH3-64(namespace, seed 1), wrapping; the chain stays seeded 1337", () => {
    // Dynamo's current form (lib/kv-hashing/src/salt.rs compute_salt_hash, called by
    // lib/kv-router/src/protocols.rs block_hash_seed). Vector: tokens 0..3, block size 4, "tenant-a".
    assert.equal(localHashSeed("", "tenant-a"), 1948188790972764086n);
    assert.equal(hashPrompt([0, 1, 2, 3], 4, "", "tenant-a").local[0], 17009624042690211646n);
    assert.equal(localHashSeed("", ""), 1337n, "an empty namespace is no namespace");
    assert.equal(localHashSeed("a", "a") === localHashSeed("", "a"), false, "lora and namespace are mixed apart");
    const tokens = randomTokens(16 * 2);
    const ns = hashPrompt(tokens, 16, "", "tenant-a");
    const base = hashPrompt(tokens, 16);
    ns.local.forEach((h, i) => assert.notEqual(h, base.local[i], `block ${i} changes`));
    assert.equal(sequenceHash(ns.sequence[0], ns.local[1]), ns.sequence[1], "sequence chain still seeded 1337");
  });

  it("multimodal blocks hash token bytes then each mm_hash as u64 LE, sorted ascending", () => {
    mmCases.forEach((c, i) => {
      const mm = c.mm.map(BigInt);
      const seed = localHashSeed(c.lora ?? "");
      assert.equal(localBlockHash(c.tokens, seed, mm).toString(), ref.mm[i], `case ${i}`);
      assert.equal(localBlockHash(c.tokens, seed, [...mm].reverse()).toString(), ref.mm[i], `case ${i}: order does not matter`);
      assert.notEqual(localBlockHash(c.tokens, seed, mm), localBlockHash(c.tokens, seed), `case ${i}: mm objects change the hash`);
    });
  });

  it("accepts a Uint32Array the same as a number array", () => {
    const c = promptCases[2];
    assert.deepEqual(hashPrompt(Uint32Array.from(c.tokens), c.block_size), hashPrompt(c.tokens, c.block_size));
  });
});

describe("kv-router hash subcommand", () => {
  function cli(...args: string[]) {
    return spawnSync(process.execPath, ["--import", "tsx", "src/cli/main.ts", "hash", ...args], {
      cwd: REPO,
      encoding: "utf8",
      env: { ...process.env, KV_ROUTER_LOG: "error" },
    });
  }

  // Cases picked from the table above: the reference, u32 edges with a partial tail, and a LoRA adapter.
  const picks = [
    0,
    promptCases.findIndex((c) => c.block_size === 16 && c.tokens.length % 16 !== 0),
    promptCases.findIndex((c) => c.lora === "ünïcödé-ådäptér"),
    promptCases.findIndex((c) => c.ns === "tenant-a" && c.lora === undefined),
    promptCases.findIndex((c) => c.ns === "tenant-a" && c.lora !== undefined),
  ];

  for (const i of picks) {
    const c = promptCases[i];
    it(`prints Python's hashes as decimal strings (block size ${c.block_size}, ${c.tokens.length} tokens, lora "${c.lora ?? ""}", ns "${c.ns ?? ""}")`, () => {
      const args = ["--block-size", String(c.block_size), "--tokens", c.tokens.join(",")];
      if (c.lora) args.push("--lora-name", c.lora);
      if (c.ns) args.push("--cache-namespace", c.ns);
      const r = cli(...args);
      assert.equal(r.status, 0, r.stderr);
      const out = JSON.parse(r.stdout);
      assert.equal(out.block_size, c.block_size);
      assert.equal(out.tokens, c.tokens.length);
      assert.equal(out.ignored_tail_tokens, c.tokens.length % c.block_size);
      assert.deepEqual(out.local_hashes, ref.prompts[i].local);
      assert.deepEqual(out.sequence_hashes, ref.prompts[i].sequence);
    });
  }

  it("rejects a token id that is not a u32, and a block size of 0", () => {
    for (const args of [
      ["--block-size", "4", "--tokens", "1,2,3,4294967296"],
      ["--block-size", "4", "--tokens", "1,-2,3,4"],
      ["--block-size", "0", "--tokens", "1,2,3,4"],
    ]) {
      const r = cli(...args);
      assert.notEqual(r.status, 0, `${args.join(" ")} should fail`);
      assert.match(r.stderr, /--tokens|--block-size/, `${args.join(" ")}: says which flag is wrong`);
      assert.equal(r.stdout, "");
    }
  });
});
