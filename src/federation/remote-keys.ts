import * as v from 'valibot';
import type { FederationKeysStore } from '../storage/federation-keys-store.ts';
import { decodeBase64 } from '../shared/base64.ts';
import type { FederationClient } from './federation-client.ts';
import { verifySignature } from './json-signing.ts';

const ServerKeysResponse = v.object({
  server_name: v.string(),
  valid_until_ts: v.number(),
  verify_keys: v.record(v.string(), v.object({ key: v.string() })),
  signatures: v.record(v.string(), v.record(v.string(), v.string())),
});

// Spec: a key whose valid_until_ts is further than 7 days away is treated as valid for 7 days.
const MAX_VALIDITY_MS = 7 * 24 * 3600_000;
// Don't hammer a server whose keys we just failed to get: a request naming it as origin in the
// next minute is refused at once (a forged origin costs one fetch a minute, not one a request).
const NEGATIVE_CACHE_MS = 60_000;
// Longest a request waits for an origin's keys, discovery included (Synapse allows 10 s).
export const KEY_FETCH_DEADLINE_MS = 5_000;

/**
 * Other servers' verify keys: from memory, then the database, else fetched from the server's
 * own `/_matrix/key/v2/server` and accepted only if self-signed by one of them. The fetch goes
 * through a client of its own (not the federation sender's, whose connections may all be busy
 * with slow destinations) and gives up after `KEY_FETCH_DEADLINE_MS`.
 */
export class RemoteKeys {
  private readonly memory = new Map<string, { key: Buffer; validUntil: number }>();
  private readonly failures = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(
    private readonly store: FederationKeysStore,
    private readonly client: Pick<FederationClient, 'request'>,
    private readonly deadlineMs = KEY_FETCH_DEADLINE_MS,
  ) {}

  async getVerifyKey(serverName: string, keyId: string): Promise<Buffer | null> {
    const id = `${serverName} ${keyId}`;
    const now = Date.now();
    const mem = this.memory.get(id);
    if (mem !== undefined && mem.validUntil > now) return mem.key;
    const stored = await this.store.getRemoteKey(serverName, keyId);
    if (stored !== null && stored.validUntilTs > now) {
      const key = decodeBase64(stored.publicKey);
      if (key !== null) {
        this.memory.set(id, { key, validUntil: stored.validUntilTs });
        return key;
      }
    }
    if ((this.failures.get(serverName) ?? 0) > now) return null;
    let pending = this.inflight.get(serverName);
    if (pending === undefined) {
      pending = this.fetchKeys(serverName).finally(() => this.inflight.delete(serverName));
      this.inflight.set(serverName, pending);
    }
    await pending;
    const fetched = this.memory.get(id);
    return fetched !== undefined && fetched.validUntil > Date.now() ? fetched.key : null;
  }

  private async fetchKeys(serverName: string): Promise<void> {
    try {
      const res = await withDeadline(this.client.request(serverName, 'GET', '/_matrix/key/v2/server', undefined, false), this.deadlineMs);
      const parsed = v.safeParse(ServerKeysResponse, res.json);
      if (res.status !== 200 || !parsed.success || parsed.output.server_name !== serverName) throw new Error('bad key response');
      const body = parsed.output;
      const keys = Object.entries(body.verify_keys).flatMap(([keyId, { key }]) => {
        const raw = decodeBase64(key);
        return raw === null || raw.length !== 32 ? [] : [{ keyId, raw, publicKey: key }];
      });
      const selfSigned = keys.some((k) => {
        const sig = body.signatures[serverName]?.[k.keyId];
        return sig !== undefined && verifySignature(res.json as Record<string, unknown>, sig, k.raw);
      });
      if (!selfSigned) throw new Error('key response not self-signed');
      const validUntil = Math.min(body.valid_until_ts, Date.now() + MAX_VALIDITY_MS);
      await this.store.putRemoteKeys(serverName, keys, validUntil);
      for (const k of keys) this.memory.set(`${serverName} ${k.keyId}`, { key: k.raw, validUntil });
    } catch {
      this.failures.set(serverName, Date.now() + NEGATIVE_CACHE_MS);
    }
  }
}

function withDeadline<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
