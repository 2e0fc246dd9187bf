/** Matrix user IDs: `@localpart:server_name`, at most 255 bytes. */
export interface UserId {
  localpart: string;
  serverName: string;
}

const SERVER_NAME = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,255})(?::[0-9]{1,5})?$/;
// Historical user IDs allow any printable ASCII but ':'; we accept them as recipients because
// other servers may still have such users.
const HISTORICAL_LOCALPART = /^[\x21-\x39\x3b-\x7e]+$/;
// What new registrations may use (spec "user identifiers" grammar).
const STRICT_LOCALPART = /^[a-z0-9._=\-/+]+$/;

export function isValidServerName(name: string): boolean {
  return SERVER_NAME.test(name);
}

/**
 * Parses a user ID. An empty localpart is returned only when `allowEmptyLocalpart` is set:
 * MSC4246 reserves `@:server_name` for the server itself and nothing else may use it.
 */
export function parseUserId(raw: string, opts: { allowEmptyLocalpart?: boolean } = {}): UserId | null {
  if (typeof raw !== 'string' || !raw.startsWith('@')) return null;
  if (Buffer.byteLength(raw, 'utf8') > 255) return null;
  const colon = raw.indexOf(':');
  if (colon < 0) return null;
  const localpart = raw.slice(1, colon);
  const serverName = raw.slice(colon + 1);
  if (!isValidServerName(serverName)) return null;
  if (localpart === '') return opts.allowEmptyLocalpart ? { localpart, serverName } : null;
  if (!HISTORICAL_LOCALPART.test(localpart)) return null;
  return { localpart, serverName };
}

export function isValidNewLocalpart(localpart: string): boolean {
  return STRICT_LOCALPART.test(localpart);
}

export function formatUserId(localpart: string, serverName: string): string {
  return `@${localpart}:${serverName}`;
}
