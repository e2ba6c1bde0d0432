// XXH3's default secret and what the router derives from it, kept in one
// place for the three XXH3 implementations (JS blocks, JS sequence hash,
// WebAssembly) so they cannot drift apart.
import { KV_HASH_SEED } from "./blockHash.js";

export const M64 = (1n << 64n) - 1n;
export const SECRET_SIZE = 192;

/** XXH3's default 192-byte secret (kSecret). */
const K_SECRET = Uint8Array.from(
  Buffer.from(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f" +
      "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c" +
      "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8" +
      "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364" +
      "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e" +
      "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e",
    "hex",
  ),
);
const kView = new DataView(K_SECRET.buffer);

/** The u64 (little-endian) at byte `offset` of the default secret. */
export const defaultSecret64 = (offset: number): bigint => kView.getBigUint64(offset, true);

/** XXH3_initCustomSecret: each 16-byte lane adds the seed to its low word and subtracts it from its high word. */
export function customSecret(seed: bigint): Uint8Array {
  const secret = new Uint8Array(SECRET_SIZE);
  const view = new DataView(secret.buffer);
  for (let i = 0; i < SECRET_SIZE; i += 16) {
    view.setBigUint64(i, (kView.getBigUint64(i, true) + seed) & M64, true);
    view.setBigUint64(i + 8, (kView.getBigUint64(i + 8, true) - seed) & M64, true);
  }
  return secret;
}

/**
 * The two keys of XXH3's 9..16-byte path (bytes 24..55 of the default
 * secret, with the seed folded in) for the sequence hash's seed 1337.
 */
export const SEQ_FLIP1 = ((kView.getBigUint64(24, true) ^ kView.getBigUint64(32, true)) + KV_HASH_SEED) & M64;
export const SEQ_FLIP2 = ((kView.getBigUint64(40, true) ^ kView.getBigUint64(48, true)) - KV_HASH_SEED) & M64;
