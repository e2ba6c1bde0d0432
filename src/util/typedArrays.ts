// Growing typed arrays: the index's tables, the decoders' outputs and the
// record writers all grow the same way, a copy into a longer array.

type Growable = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array;

/** A new array of `a`'s type with `length` elements: `a`'s values, then zeros. */
export function grown<T extends Growable>(a: T, length: number): T {
  const b = new (a.constructor as new (n: number) => T)(length);
  b.set(a as ArrayLike<number>);
  return b;
}

/** grown() to the first doubling of `a`'s length that holds `need` elements. */
export function doubledFor<T extends Growable>(a: T, need: number): T {
  let length = Math.max(1, a.length) * 2;
  while (length < need) length *= 2;
  return grown(a, length);
}
