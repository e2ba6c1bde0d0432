// Reads the OpenAI request body a gateway forwards (/v1/completions,
// /v1/chat/completions) into what routing needs: the model (base or LoRA
// adapter) and the prompt as the engine will see it.
import type { ChatMessage } from "./tokenizer.js";

/** A request refused with the HTTP status a gateway expects, and a counted reason. */
export class GatewayRefusal extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

export type OpenAiPrompt =
  | { kind: "tokens"; ids: number[] }
  | { kind: "text"; text: string }
  | { kind: "chat"; messages: ChatMessage[]; tools?: unknown; addGenerationPrompt: boolean; templateKwargs: Record<string, unknown> };

export interface OpenAiRequest {
  model: string;
  prompt: OpenAiPrompt;
}

function notOpenAi(message: string): never {
  throw new GatewayRefusal(400, "not_openai", message);
}

export function parseOpenAiRequest(body: Uint8Array): OpenAiRequest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("utf8"));
  } catch (err) {
    throw new GatewayRefusal(400, "not_json", `request body is not JSON: ${(err as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) notOpenAi("request body must be a JSON object (an OpenAI completion or chat request)");
  const req = doc as Record<string, unknown>;
  if (typeof req.model !== "string" || req.model === "") notOpenAi('"model" is required (a string)');
  if (req.messages !== undefined) return { model: req.model, prompt: chatPrompt(req) };
  if (req.prompt !== undefined) return { model: req.model, prompt: completionPrompt(req.prompt) };
  notOpenAi('expected "messages" (chat completion) or "prompt" (completion)');
}

function chatPrompt(req: Record<string, unknown>): OpenAiPrompt {
  const messages = req.messages;
  if (!Array.isArray(messages) || messages.length === 0) notOpenAi('"messages" must be a non-empty list');
  messages.forEach((m, i) => {
    if (!m || typeof m !== "object" || typeof (m as { role?: unknown }).role !== "string") notOpenAi(`messages[${i}] needs a "role" string`);
  });
  const kwargs = req.chat_template_kwargs;
  if (kwargs !== undefined && (kwargs === null || typeof kwargs !== "object" || Array.isArray(kwargs))) notOpenAi('"chat_template_kwargs" must be an object');
  return {
    kind: "chat",
    messages: messages as ChatMessage[],
    tools: req.tools,
    // vLLM's default for chat completions.
    addGenerationPrompt: req.add_generation_prompt === undefined ? true : Boolean(req.add_generation_prompt),
    templateKwargs: (kwargs as Record<string, unknown> | undefined) ?? {},
  };
}

const isTokenId = (x: unknown) => Number.isInteger(x) && (x as number) >= 0 && (x as number) <= 0xffffffff;

/** A prompt is text, token ids, or a batch of either; a batch is routed by its first prompt. */
function completionPrompt(prompt: unknown): OpenAiPrompt {
  if (typeof prompt === "string") return { kind: "text", text: prompt };
  if (Array.isArray(prompt) && prompt.length > 0) {
    if (prompt.every(isTokenId)) return { kind: "tokens", ids: prompt as number[] };
    const first = prompt[0];
    if (typeof first === "string") return { kind: "text", text: first };
    if (Array.isArray(first) && first.every(isTokenId)) return { kind: "tokens", ids: first as number[] };
  }
  notOpenAi('"prompt" must be a string, a list of token ids (u32), or a list of those');
}
