// Which models the gateway routes and how each is tokenized: --tokenizer
// [NAME=]DIR loads a model directory (no NAME: any model name uses it), and
// --lora-adapter NAME=BASE names an adapter served on top of BASE (its
// requests route with the adapter's block hashes).
import type { ModelSpec } from "./modelSpec.js";
import { GatewayRefusal } from "./openaiRequest.js";
import { PromptTokenizer } from "./tokenizer.js";


export interface ResolvedModel {
  tokenizer?: PromptTokenizer;
  /** The LoRA adapter the prompt runs with; "" for the base model. */
  loraName: string;
}

export class ModelCatalog {
  private readonly named = new Map<string, PromptTokenizer>();
  private readonly fallback?: PromptTokenizer;
  private readonly adapters = new Map<string, string>();

  /** Loads every tokenizer now: a missing or malformed file fails start-up, naming the file. */
  constructor(spec: ModelSpec) {
    for (const t of spec.tokenizers) {
      const tokenizer = PromptTokenizer.load(t.dir);
      if (t.name === undefined) this.fallback = tokenizer;
      else this.named.set(t.name, tokenizer);
    }
    for (const a of spec.loraAdapters) this.adapters.set(a.name, a.base);
  }

  /** True when model names are checked (some tokenizer is named and none takes every name). */
  get restricted(): boolean {
    return this.named.size > 0 && this.fallback === undefined;
  }

  /** Why `model` is not served (→ 404), or undefined. */
  problem(model: string): string | undefined {
    if (!this.restricted || this.named.has(model) || this.adapters.has(model)) return undefined;
    return `model "${model}" is not served here (known: ${[...this.named.keys(), ...this.adapters.keys()].join(", ")})`;
  }

  resolve(model: string): ResolvedModel {
    const problem = this.problem(model);
    if (problem) throw new GatewayRefusal(404, "unknown_model", problem);
    const base = this.adapters.get(model);
    if (base !== undefined) return { tokenizer: this.named.get(base) ?? this.fallback, loraName: model };
    return { tokenizer: this.named.get(model) ?? this.fallback, loraName: "" };
  }
}
