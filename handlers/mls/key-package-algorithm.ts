import * as v from 'valibot';
import { decodeBase64, type KeyVerdict, type OneTimeKeyAlgorithm, type UploadedKey } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';
import { decodeRequiredCapabilities, satisfies, type KeyPackageMetadata, type RequiredCapabilities } from './key-package-metadata.ts';
import { keyPackageValidation } from './lazy.ts';

/** MSC4244's `protocol_version` for RFC 9420's `mls10`. */
export const MLS_10 = 'm.mls_10';

// A KeyPackage is well under a to-device message; this only keeps one upload honest.
const MAX_KEY_PACKAGE_BASE64 = 65_536;

/**
 * The `mls` object of a `/keys/claim` (and federation `/user/keys/claim`) body, MSC4244
 * §KeyPackages. `required_capabilities` is decoded here, once per claim.
 */
const claimSchema = v.pipe(
  v.object({
    protocol_version: v.pipe(v.string(), v.maxLength(64)),
    acceptable_ciphersuites: v.pipe(v.array(v.pipe(v.string(), v.maxLength(100))), v.maxLength(64)),
    required_capabilities: v.optional(v.pipe(v.string(), v.maxLength(4096))),
  }),
  v.transform((o) => {
    const bytes = o.required_capabilities === undefined ? null : decodeBase64(o.required_capabilities);
    const required: RequiredCapabilities | null | 'invalid' =
      o.required_capabilities === undefined ? null : bytes === null ? 'invalid' : (decodeRequiredCapabilities(bytes) ?? 'invalid');
    return { protocolVersion: o.protocol_version, acceptable: o.acceptable_ciphersuites, required };
  }),
);

export type MlsClaim = v.InferOutput<typeof claimSchema>;

/** Refusal texts per problem, for the upload's Matrix error. */
const PROBLEMS: Record<string, string> = {
  undecodable: 'not an unpadded base64 RFC 9420 KeyPackage (a bare KeyPackage, not an MLSMessage)',
  not_a_key_package: 'not an mls10 KeyPackage',
  unsupported_ciphersuite: 'its cipher suite is not accepted by this server',
  bad_signature: 'its signature or its leaf node signature does not verify',
  wrong_identity: 'its credential must be a basic credential with identity "<user_id>|<device_id>" of the uploading device',
  expired: 'its lifetime does not include now',
  init_key_reused: 'its init_key equals its leaf encryption key',
};

async function validate(key: UploadedKey, ctx: { config: MlsConfig }): Promise<KeyVerdict> {
  const text = typeof key.key === 'object' && key.key !== null ? (key.key as { key?: unknown }).key : undefined;
  if (typeof text !== 'string' || text.length > MAX_KEY_PACKAGE_BASE64) {
    return { ok: false, errcode: 'M_BAD_JSON', error: 'an mls key is {"key": "<unpadded base64 KeyPackage>"} (MSC4244)' };
  }
  const { validateKeyPackage } = await keyPackageValidation();
  const verdict = await validateKeyPackage(text, key, ctx.config.ciphersuites);
  if (!verdict.ok) return { ok: false, error: `KeyPackage refused, ${verdict.problem}: ${PROBLEMS[verdict.problem] ?? ''}` };
  return { ok: true, metadata: { ...verdict.metadata } };
}

/**
 * MSC4244 KeyPackages as `mls:<key_id>` one-time keys (and last-resort packages as the `mls`
 * fallback key): checked at upload, matched at claim by the body's `mls` object.
 */
export const mlsKeyAlgorithm: OneTimeKeyAlgorithm<MlsConfig, unknown, MlsClaim> = {
  name: 'mls',
  validate,
  claim: {
    schema: claimSchema,
    check: (params) => (params.required === 'invalid' ? 'required_capabilities is not an unpadded base64 RFC 9420 RequiredCapabilities' : null),
    matches: (params, key) => {
      // Only RFC 9420 MLS is known; a claim for another protocol version finds no package.
      if (params.protocolVersion !== MLS_10 || params.required === 'invalid') return false;
      return satisfies(key.metadata as unknown as KeyPackageMetadata, params.acceptable, params.required);
    },
  },
};
