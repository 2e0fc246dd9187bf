import type { Context } from 'hono';
import { MatrixError } from '../errors/matrix-error.ts';
import { isValidServerName } from '../shared/user-id.ts';
import { verifySignature } from '../federation/json-signing.ts';
import type { RemoteKeys } from '../federation/remote-keys.ts';
import { parseXMatrix } from '../federation/x-matrix.ts';

/**
 * Authenticates a server-server request (spec "Request Authentication"): the X-Matrix header
 * must name this server as destination (when present) and carry a valid signature, by one of
 * the origin's keys, over {method, uri, origin, destination, content}. Returns the origin.
 */
export async function authenticateFederation(c: Context, serverName: string, keys: RemoteKeys, content: unknown): Promise<string> {
  const header = c.req.header('authorization');
  if (header === undefined) throw new MatrixError('M_UNAUTHORIZED', 'Missing X-Matrix Authorization header');
  const auth = parseXMatrix(header);
  if (auth === null) throw new MatrixError('M_UNAUTHORIZED', 'Malformed X-Matrix Authorization header');
  if (!isValidServerName(auth.origin)) throw new MatrixError('M_UNAUTHORIZED', 'Invalid origin');
  if (auth.destination !== null && auth.destination !== serverName) {
    throw new MatrixError('M_UNAUTHORIZED', `This request is for ${auth.destination}, not ${serverName}`);
  }
  if (auth.origin === serverName) throw new MatrixError('M_UNAUTHORIZED', 'Requests from this server to itself are not accepted');
  const url = new URL(c.req.url);
  const signed: Record<string, unknown> = {
    method: c.req.method,
    uri: `${url.pathname}${url.search}`,
    origin: auth.origin,
    destination: auth.destination ?? serverName,
  };
  if (content !== undefined) signed.content = content;
  const key = await keys.getVerifyKey(auth.origin, auth.key);
  if (key === null) throw new MatrixError('M_UNAUTHORIZED', `Cannot get key ${auth.key} of ${auth.origin}`);
  if (!verifySignature(signed, auth.sig, key)) throw new MatrixError('M_UNAUTHORIZED', 'Invalid signature');
  return auth.origin;
}
