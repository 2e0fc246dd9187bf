import * as v from 'valibot';
// The names only, from the one ts-mls file that defines them: the package's index would load
// all of ts-mls and its crypto at startup (see lazy.ts).
import { ciphersuites, type CiphersuiteName } from 'ts-mls/crypto/ciphersuite.js';

const suiteName = v.picklist(Object.keys(ciphersuites) as CiphersuiteName[]);

/** The module's block of the server config: `handlers: [{module: mls, config: {…}}]`. */
export const mlsConfig = v.strictObject({
  /** Ciphersuites accepted in uploaded KeyPackages. The default needs no optional dependency. */
  ciphersuites: v.optional(v.pipe(v.array(suiteName), v.minLength(1)), ['MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519']),
  /**
   * Settings of the to-device KeyPackage directory this module had before KeyPackages moved to
   * the keys API (MSC4244): still accepted so that an old config starts, ignored with a warning
   * (claims are now limited by the server's `rate_limits.keys_claim`).
   */
  max_key_packages_per_device: v.optional(v.unknown()),
  claim_rate: v.optional(v.unknown()),
});

export type MlsConfig = v.InferOutput<typeof mlsConfig>;
