// Prompt tokenization as the engine does it, from a Hugging Face model
// directory: tokenizer.json with @huggingface/tokenizers (the JS port of
// Hugging Face's tokenizers, the library vLLM and SGLang tokenize with) and
// the chat template with @huggingface/jinja (the Jinja dialect transformers'
// apply_chat_template renders). Repeated prefixes are cheap: text is split at
// added tokens (<|im_start|>, <|im_end|> ...), which the tokenizer also
// splits at before anything else, and each piece's ids are cached.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

export class TokenizerLoadError extends Error {}

/** A chat message as the OpenAI API sends it (content may be a list of parts). */
export interface ChatMessage {
  role: string;
  content?: unknown;
  [key: string]: unknown;
}

interface AddedToken {
  id: number;
  content: string;
  lstrip?: boolean;
  rstrip?: boolean;
  single_word?: boolean;
}

/** Most cached pieces; older ones are dropped first. */
const CACHE_ENTRIES = 8192;
/** Longer pieces are not cached (they would crowd out the shared ones). */
const CACHE_MAX_PIECE = 64 * 1024;

export class PromptTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly template?: Template;
  private readonly specialTokens: Record<string, string> = {};
  /** Splits text at added tokens; undefined when a token's strip flags make splitting inexact. */
  private readonly splitter?: RegExp;
  private readonly addedIds = new Map<string, number>();
  /** What add_special_tokens puts around a text (e.g. Llama's <|begin_of_text|>). */
  private readonly specialPrefix: number[];
  private readonly specialSuffix: number[];
  private readonly cache = new Map<string, number[]>();
  cacheHits = 0;
  cacheMisses = 0;

  constructor(
    readonly dir: string,
    tokenizerJson: Record<string, unknown>,
    config: Record<string, unknown>,
    chatTemplate: string | undefined,
    templateFile: string,
  ) {
    this.tokenizer = new Tokenizer(tokenizerJson, config);
    if (chatTemplate !== undefined) {
      try {
        this.template = new Template(chatTemplate);
      } catch (err) {
        throw new TokenizerLoadError(`${templateFile}: chat template does not parse: ${(err as Error).message}`);
      }
    }
    for (const name of ["bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"]) {
      const v = config[name];
      const content = typeof v === "string" ? v : v && typeof v === "object" ? (v as { content?: unknown }).content : undefined;
      if (typeof content === "string") this.specialTokens[name] = content;
    }
    const added = (tokenizerJson.added_tokens as AddedToken[] | undefined) ?? [];
    for (const t of added) this.addedIds.set(t.content, t.id);
    if (added.length > 0 && added.every((t) => !t.lstrip && !t.rstrip && !t.single_word)) {
      const alternatives = [...this.addedIds.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
      this.splitter = new RegExp(`(${alternatives.join("|")})`);
    }
    const bare = this.tokenizer.encode("x", { add_special_tokens: false }).ids;
    const full = this.tokenizer.encode("x", { add_special_tokens: true }).ids;
    const at = indexOfSeq(full, bare);
    this.specialPrefix = at < 0 ? [] : full.slice(0, at);
    this.specialSuffix = at < 0 ? [] : full.slice(at + bare.length);
  }

  /** Loads DIR/tokenizer.json, DIR/tokenizer_config.json and the chat template (DIR/chat_template.jinja or the config's). */
  static load(dir: string): PromptTokenizer {
    const tokenizerFile = join(dir, "tokenizer.json");
    const configFile = join(dir, "tokenizer_config.json");
    const tokenizerJson = readJsonObject(tokenizerFile);
    const config = readJsonObject(configFile);
    if (typeof tokenizerJson.model !== "object" || tokenizerJson.model === null) {
      throw new TokenizerLoadError(`${tokenizerFile}: not a Hugging Face tokenizer (no "model" section)`);
    }
    const jinjaFile = join(dir, "chat_template.jinja");
    let chatTemplate: string | undefined;
    let templateFile = configFile;
    if (existsSync(jinjaFile)) {
      chatTemplate = readFileSync(jinjaFile, "utf8");
      templateFile = jinjaFile;
    } else if (typeof config.chat_template === "string") {
      chatTemplate = config.chat_template;
    } else if (Array.isArray(config.chat_template)) {
      // transformers' named templates: the "default" one serves chat requests.
      const named = (config.chat_template as { name?: string; template?: string }[]).find((t) => t.name === "default");
      chatTemplate = named?.template;
    }
    try {
      return new PromptTokenizer(dir, tokenizerJson, config, chatTemplate, templateFile);
    } catch (err) {
      if (err instanceof TokenizerLoadError) throw err;
      throw new TokenizerLoadError(`${tokenizerFile}: cannot build the tokenizer: ${(err as Error).message}`);
    }
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /** The prompt text of a chat request, rendered as transformers' apply_chat_template(tokenize=False). */
  renderChat(messages: ChatMessage[], options: { addGenerationPrompt: boolean; tools?: unknown; extra?: Record<string, unknown> }): string {
    if (!this.template) throw new Error(`${this.dir} has no chat template; chat requests cannot be tokenized`);
    return this.template.render({
      ...this.specialTokens,
      ...options.extra,
      messages: messages.map(flattenContent),
      tools: options.tools ?? undefined,
      add_generation_prompt: options.addGenerationPrompt,
    });
  }

  /** Token ids of `text` (add_special_tokens as the engine uses it: true for completions, false for rendered chats). */
  encode(text: string, addSpecialTokens: boolean): number[] {
    const ids: number[] = addSpecialTokens ? [...this.specialPrefix] : [];
    if (this.splitter === undefined) {
      ids.push(...this.tokenizer.encode(text, { add_special_tokens: false }).ids);
    } else {
      for (const piece of text.split(this.splitter)) {
        if (piece === "") continue;
        const added = this.addedIds.get(piece);
        if (added !== undefined) ids.push(added);
        else for (const id of this.encodePiece(piece)) ids.push(id);
      }
    }
    if (addSpecialTokens) ids.push(...this.specialSuffix);
    return ids;
  }

  private encodePiece(piece: string): number[] {
    const cached = this.cache.get(piece);
    if (cached !== undefined) {
      this.cacheHits++;
      // Re-inserting keeps recently used pieces at the young end.
      this.cache.delete(piece);
      this.cache.set(piece, cached);
      return cached;
    }
    this.cacheMisses++;
    const ids = this.tokenizer.encode(piece, { add_special_tokens: false }).ids;
    if (piece.length <= CACHE_MAX_PIECE) {
      this.cache.set(piece, ids);
      if (this.cache.size > CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value!);
    }
    return ids;
  }
}

/**
 * vLLM's "string" content format: a list of content parts becomes its text
 * parts joined by newlines (what text-only chat templates expect).
 */
function flattenContent(m: ChatMessage): ChatMessage {
  if (!Array.isArray(m.content)) return m.content === undefined || m.content === null ? { ...m, content: "" } : m;
  const text = m.content
    .filter((p) => p && typeof p === "object" && (p as { type?: unknown }).type === "text")
    .map((p) => String((p as { text?: unknown }).text ?? ""));
  return { ...m, content: text.join("\n") };
}

function readJsonObject(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new TokenizerLoadError(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new TokenizerLoadError(`${file}: not valid JSON: ${(err as Error).message}`);
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new TokenizerLoadError(`${file}: expected a JSON object`);
  return value as Record<string, unknown>;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function indexOfSeq(haystack: number[], needle: number[]): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
