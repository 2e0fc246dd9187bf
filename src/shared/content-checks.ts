import { MatrixError } from '../errors/matrix-error.ts';
import { CanonicalJsonError, canonicalJson } from './canonical-json.ts';

/**
 * The largest content of one to-device message, in bytes of canonical JSON: Synapse's cap,
 * which we share so that what we accept can be relayed to Synapse peers. Larger is refused
 * with M_TOO_LARGE.
 *
 * @since 1.0.0
 */
export const MAX_CONTENT_BYTES = 65_536;

/**
 * Refuses content a to-device message may not carry: not canonical JSON (`M_BAD_JSON`), or over
 * MAX_CONTENT_BYTES (`M_TOO_LARGE`). The one check for clients, federation and modules alike.
 */
export function checkContent(content: Record<string, unknown>): void {
  encodeContent(content);
}

/**
 * {@link checkContent}, answering the content's canonical JSON text: what the server stores and
 * relays, so the bytes measured are the bytes kept (and the content is encoded once).
 *
 * @internal
 */
export function encodeContent(content: Record<string, unknown>): string {
  let text: string;
  try {
    text = canonicalJson(content);
  } catch (e) {
    if (e instanceof CanonicalJsonError) throw new MatrixError('M_BAD_JSON', `Message content is not canonical JSON: ${e.message}`);
    throw e;
  }
  // A UTF-8 byte is at most one UTF-16 unit, so short text needs no count.
  const size = text.length * 3 <= MAX_CONTENT_BYTES ? text.length : Buffer.byteLength(text, 'utf8');
  if (size > MAX_CONTENT_BYTES) {
    throw new MatrixError('M_TOO_LARGE', `A message's content is ${size} bytes; the limit is ${MAX_CONTENT_BYTES}`);
  }
  return text;
}
