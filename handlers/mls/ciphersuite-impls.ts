import { getCiphersuiteFromName, getCiphersuiteImpl, type CiphersuiteImpl, type CiphersuiteName } from 'ts-mls';

// Crypto implementations are stateless and costly to build, so they are shared by every
// module instance in the process.
const cache = new Map<CiphersuiteName, Promise<CiphersuiteImpl | null>>();

/** The implementation of a ciphersuite, or null when its optional dependencies are not installed. */
export function ciphersuiteImpl(name: CiphersuiteName): Promise<CiphersuiteImpl | null> {
  let impl = cache.get(name);
  if (impl === undefined) {
    impl = getCiphersuiteImpl(getCiphersuiteFromName(name)).catch(() => null);
    cache.set(name, impl);
  }
  return impl;
}
