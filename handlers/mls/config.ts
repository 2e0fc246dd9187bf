import * as v from 'valibot';
// The names only, from the one ts-mls file that defines them: the package's index would load
// all of ts-mls and its crypto at startup (see lazy.ts).
import { ciphersuites, type CiphersuiteName } from 'ts-mls/crypto/ciphersuite.js';

const suiteName = v.picklist(Object.keys(ciphersuites) as CiphersuiteName[]);

/** The module's block of the server config: `handlers: [{module: mls, config: {…}}]`. */
export const mlsConfig = v.strictObject({
  /** Ciphersuites accepted in uploaded KeyPackages. The default needs no optional dependency. */
  ciphersuites: v.optional(v.pipe(v.array(suiteName), v.minLength(1)), ['MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519']),
  /** One-time KeyPackages kept per device; uploads beyond it are refused (`too_many`). */
  max_key_packages_per_device: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(10_000)), 100),
  /** Claims per user: a token bucket of `burst` claims refilled at `per_minute`. */
  claim_rate: v.optional(
    v.strictObject({
      per_minute: v.optional(v.pipe(v.number(), v.minValue(0)), 60),
      burst: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1)), 20),
    }),
    {},
  ),
});

export type MlsConfig = v.InferOutput<typeof mlsConfig>;
