// Growing typed arrays: the index's tables, the decoders' outputs and the
// record writers all grow the same way, a copy into a longer array. An array
// on a SharedArrayBuffer grows onto a new SharedArrayBuffer (the index's
// node-side arrays, which the main thread reads while a shard writes them).

type Growable = Uint8Array | Uint16Array | Uint32Array | Int32Array | Float64Array;

/** A zeroed array of `a`'s type with `length` elements, shared when `a` is. */
export function sameKind<T extends Growable>(a: T, length: number): T {
  const Ctor = a.constructor as { new (n: number): T; new (b: ArrayBufferLike): T; BYTES_PER_ELEMENT: number };
  return a.buffer instanceof SharedArrayBuffer ? new Ctor(new SharedArrayBuffer(length * Ctor.BYTES_PER_ELEMENT)) : new Ctor(length);
}

/** A new array of `a`'s type (and sharedness) with `length` elements: `a`'s values, then zeros. */
export function grown<T extends Growable>(a: T, length: number): T {
  const b = sameKind(a, length);
  b.set(a as ArrayLike<number>);
  return b;
}

/** grown() to the first doubling of `a`'s length that holds `need` elements. */
export function doubledFor<T extends Growable>(a: T, need: number): T {
  let length = Math.max(1, a.length) * 2;
  while (length < need) length *= 2;
  return grown(a, length);
}

/** An empty array of type `Ctor` on a SharedArrayBuffer when `shared`, else an ordinary one. */
export function emptyArray<T extends Growable>(Ctor: { new (n: number): T; new (b: ArrayBufferLike): T }, shared: boolean): T {
  return shared ? new Ctor(new SharedArrayBuffer(0)) : new Ctor(0);
}
