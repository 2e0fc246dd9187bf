import { Hono } from 'hono';
import { encodeBase64 } from '../../shared/base64.ts';
import type { SigningKey } from '../../shared/ed25519.ts';
import { signJson } from '../../federation/json-signing.ts';
import type { AppEnv } from '../env.ts';

const VALIDITY_MS = 24 * 3600_000;

/**
 * `GET /_matrix/key/v2/server`: this server's verify key, self-signed. Also at
 * `/_matrix/key/v2/server/{keyId}` (deprecated in the spec, and the path Synapse up to at least
 * 1.67 fetches, with the key ID URL-encoded): there, as Synapse's own key server does, the key
 * ID is not used to filter — the answer lists every key, and the caller picks the one it needs.
 */
export function keyServerRoutes(serverName: string, key: SigningKey): Hono<AppEnv> {
  const r = new Hono<AppEnv>();
  const answer = () =>
    signJson(
      {
        server_name: serverName,
        verify_keys: { [key.keyId]: { key: encodeBase64(key.publicKey) } },
        old_verify_keys: {},
        valid_until_ts: Date.now() + VALIDITY_MS,
      },
      serverName,
      key,
    );
  r.get('/v2/server', (c) => c.json(answer()));
  r.get('/v2/server/', (c) => c.json(answer()));
  r.get('/v2/server/:keyId', (c) => c.json(answer()));
  return r;
}
