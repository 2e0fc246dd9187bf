/**
 * The parts of this module that need ts-mls proper, imported at the first message that needs
 * them rather than at startup: ts-mls with the crypto it brings (@hpke, @noble) is several MB of
 * heap in every server that loads the module (it loads by default), most of which may never see
 * an MLS message. Config validation needs only ts-mls's list of ciphersuite names (config.ts), so
 * a bad config still fails at start, and so does a missing ts-mls.
 */
import type * as MlsWire from './mls-wire.ts';
import type * as KeyPackageValidation from './validate-key-package.ts';

let wire: Promise<typeof MlsWire> | undefined;
let keyPackages: Promise<typeof KeyPackageValidation> | undefined;

/** mls-wire.ts (MLSMessage decoding), loaded once. */
export function mlsWire(): Promise<typeof MlsWire> {
  wire ??= import('./mls-wire.ts');
  return wire;
}

/** validate-key-package.ts (signatures, identities, lifetimes of KeyPackages), loaded once. */
export function keyPackageValidation(): Promise<typeof KeyPackageValidation> {
  keyPackages ??= import('./validate-key-package.ts');
  return keyPackages;
}
