import { randomBytes } from 'node:crypto';

/**
 * Request ids: unique, not secret. A random prefix per process (so the logs of several processes
 * never share an id) and a counter: one crypto call per process rather than one per request,
 * which showed up in profiles of the send path.
 */
export function requestIdSource(): () => string {
  const prefix = randomBytes(6).toString('base64url');
  let n = 0;
  return () => `${prefix}${(n++).toString(36)}`;
}
