import assert from "node:assert/strict";

/** Polls `check` until it holds; fails after `timeoutMs` (bounded, never a timing assertion). */
export async function waitFor(check: () => Promise<boolean> | boolean, what = "condition", timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
