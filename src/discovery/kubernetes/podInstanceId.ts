// The worker id of a pod, as Dynamo derives it. Dynamo's Kubernetes
// discovery (lib/runtime/src/discovery/kube/utils.rs, hash_pod_name) takes a
// pod's instance id from its name: Rust's DefaultHasher::new() (SipHash-1-3
// with both keys 0) over the name as `str::hash` feeds it (its UTF-8 bytes,
// then one 0xFF byte). A Dynamo worker in that pod stamps this id on its KV
// events, so a pod found here and the events it publishes name the same
// worker. The id is stable across relists and router restarts; a pod
// re-created under the same name (a StatefulSet) gets the same id, as in Dynamo.

const MASK = (1n << 64n) - 1n;

function rotl(x: bigint, b: bigint): bigint {
  return ((x << b) | (x >> (64n - b))) & MASK;
}

/** SipHash-1-3 with the given 128-bit key (k0, k1) over `data`. */
export function sipHash13(data: Uint8Array, k0 = 0n, k1 = 0n): bigint {
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = () => {
    v0 = (v0 + v1) & MASK;
    v1 = rotl(v1, 13n) ^ v0;
    v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & MASK;
    v3 = rotl(v3, 16n) ^ v2;
    v0 = (v0 + v3) & MASK;
    v3 = rotl(v3, 21n) ^ v0;
    v2 = (v2 + v1) & MASK;
    v1 = rotl(v1, 17n) ^ v2;
    v2 = rotl(v2, 32n);
  };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const full = data.length - (data.length % 8);
  for (let i = 0; i < full; i += 8) {
    const m = view.getBigUint64(i, true);
    v3 ^= m;
    round();
    v0 ^= m;
  }
  let last = BigInt(data.length & 0xff) << 56n;
  for (let i = full; i < data.length; i++) last |= BigInt(data[i]) << BigInt(8 * (i - full));
  v3 ^= last;
  round();
  v0 ^= last;
  v2 ^= 0xffn;
  round();
  round();
  round();
  return (v0 ^ v1 ^ v2 ^ v3) & MASK;
}

/** Dynamo's hash_pod_name: the instance id of the pod with this name. */
export function podInstanceId(podName: string): bigint {
  const name = new TextEncoder().encode(podName);
  const bytes = new Uint8Array(name.length + 1);
  bytes.set(name);
  bytes[name.length] = 0xff; // Rust's `impl Hash for str` ends with a 0xFF byte
  return sipHash13(bytes);
}
