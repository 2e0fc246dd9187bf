/**
 * The parts of this module that need ts-mls proper, imported at the first message that needs
 * them rather than at startup: ts-mls with the crypto it brings (@hpke, @noble) is several MB of
 * heap in every server that loads the module (it loads by default), most of which may never see
 * an MLS message. Config validation needs only ts-mls's list of ciphersuite names (config.ts), so
 * a bad config still fails at start, and so does a missing ts-mls.
 */
import type * as MlsWire from './mls-wire.ts';
import type * as KeyPackageValidation from './validate-key-package.ts';

/**
 * `load` run once and its promise shared — unless it fails: a failed import (a file replaced
 * under a running server by a rebuild, say) is tried again at the next message rather than
 * failing every MLS message until a restart.
 */
export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let loading: Promise<T> | undefined;
  return () => {
    loading ??= load().catch((e: unknown) => {
      loading = undefined;
      throw e;
    });
    return loading;
  };
}

/** mls-wire.ts (MLSMessage decoding). */
export const mlsWire = loadOnce<typeof MlsWire>(() => import('./mls-wire.ts'));

/** validate-key-package.ts (signatures, identities, lifetimes of KeyPackages). */
export const keyPackageValidation = loadOnce<typeof KeyPackageValidation>(() => import('./validate-key-package.ts'));
