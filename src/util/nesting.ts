// Nesting-depth bounds for every decoder of outside input. A deeply nested
// value (a few KB of "[[[[…") is a stack overflow waiting in whatever walks
// it recursively: a parser, an error message's JSON.stringify, a converter.
// Real KV events nest at most ~8 deep (docs/RELIABILITY.md).

/** Deepest nesting accepted in any decoded message (JSON, MessagePack). */
export const MAX_NESTING_DEPTH = 32;

/**
 * Deepest array/object nesting in JSON text, counted without parsing (strings
 * skipped), stopping as soon as it exceeds `limit`.
 */
export function jsonDepth(text: string, limit = MAX_NESTING_DEPTH): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/**
 * Deepest nesting of arrays, plain objects and Maps in a decoded value
 * (iterative: safe on any input), stopping as soon as it exceeds `limit`.
 */
export function valueDepth(value: unknown, limit = MAX_NESTING_DEPTH): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== "object" || v === null || ArrayBuffer.isView(v)) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (max > limit) return max;
    const children = Array.isArray(v) ? v : v instanceof Map ? [...v.values()] : Object.values(v);
    for (const c of children) if (typeof c === "object" && c !== null) stack.push([c, depth]);
  }
  return max;
}
