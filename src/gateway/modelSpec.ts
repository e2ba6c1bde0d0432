// The models the gateway routes, as the flags give them (--tokenizer [MODEL=]DIR,
// --lora-adapter NAME=BASE); models.ts loads them.

export interface ModelSpec {
  tokenizers: { name?: string; dir: string }[];
  loraAdapters: { name: string; base: string }[];
}

/** Parses `--tokenizer [NAME=]DIR` and `--lora-adapter NAME=BASE` values. */
export function modelSpecFrom(tokenizers: readonly string[], adapters: readonly string[]): ModelSpec {
  return {
    tokenizers: tokenizers.map((s) => {
      const eq = s.indexOf("=");
      return eq > 0 ? { name: s.slice(0, eq), dir: s.slice(eq + 1) } : { dir: s };
    }),
    loraAdapters: adapters.map((s) => {
      const eq = s.indexOf("=");
      if (eq <= 0 || eq === s.length - 1) throw new Error(`--lora-adapter ${JSON.stringify(s)}: expected NAME=BASE_MODEL`);
      return { name: s.slice(0, eq), base: s.slice(eq + 1) };
    }),
  };
}
