import { MlsDevice } from '../../examples/support/mls-device.ts';
import type { TestClient, ToDeviceEventJson } from './client.ts';
import { Inbox } from './inbox.ts';

/** The DS's event types in one family: MSC4244's stable names or their `org.matrix.msc4244.` forms. */
export function mlsTypes<F extends 'm' | 'org.matrix.msc4244' = 'm'>(family: F = 'm' as F) {
  return {
    message: `${family}.mls.message`,
    rejected: `${family}.mls.rejected`,
    commit: `${family}.mls.commit`,
    welcome: `${family}.mls.welcome`,
    relay: `${family}.mls.relay`,
  } as const;
}

export const T = mlsTypes('m');

export const DEFAULT_SUITE = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519';

/** MSC4244's `mls` claim object for the given suites (and RequiredCapabilities, unpadded base64). */
export function mlsClaim(suites: readonly string[] = [DEFAULT_SUITE], requiredCapabilities?: string): Record<string, unknown> {
  return { protocol_version: 'm.mls_10', acceptable_ciphersuites: suites, ...(requiredCapabilities === undefined ? {} : { required_capabilities: requiredCapabilities }) };
}

/** A claimed KeyPackage: its key id and the KeyPackage (unpadded base64). */
export interface ClaimedPackage {
  keyId: string;
  keyPackage: string;
}

/** A test user's device with its MLS state and its inbox. */
export class MlsMember {
  readonly inbox: Inbox;

  private constructor(
    readonly client: TestClient,
    readonly mls: MlsDevice,
    readonly serverUser: string,
  ) {
    this.inbox = new Inbox(client);
  }

  /** `serverUser`: the delivery service, `@:<this client's server>` unless given. */
  static async of(client: TestClient, opts: { serverUser?: string; suite?: Parameters<typeof MlsDevice.create>[2] } = {}): Promise<MlsMember> {
    const serverUser = opts.serverUser ?? `@:${client.userId.slice(client.userId.indexOf(':') + 1)}`;
    return new MlsMember(client, await MlsDevice.create(client.userId, client.deviceId, opts.suite), serverUser);
  }

  get ref(): { user_id: string; device_id: string } {
    return { user_id: this.client.userId, device_id: this.client.deviceId };
  }

  /** Sends to the server user; returns the HTTP status. */
  async send(type: string, content: Record<string, unknown>): Promise<number> {
    return (await this.client.sendToDevice(type, { [this.serverUser]: { '': content } })).status;
  }

  /** Sends, then returns what arrived in this device's queue. */
  async ask(type: string, content: Record<string, unknown>): Promise<ToDeviceEventJson[]> {
    const status = await this.send(type, content);
    if (status !== 200) throw new Error(`sendToDevice ${type}: ${status}`);
    return this.inbox.take();
  }

  /** Uploads `n` KeyPackages as `mls:` one-time keys (and a last-resort one as the `mls` fallback key). */
  async uploadKeyPackages(n: number, lastResort = false): Promise<{ status: number; body: Record<string, unknown> }> {
    const body = {
      one_time_keys: await this.mls.mlsKeys(n),
      ...(lastResort ? { fallback_keys: await this.mls.mlsKeys(1, { lastResort: true }) } : {}),
    };
    const res = await this.client.json('POST', '/v3/keys/upload', body);
    if (res.status !== 200) throw new Error(`keys/upload: ${res.status} ${JSON.stringify(res.body)}`);
    return res;
  }

  /** Claims one `mls` key per device of `userId` with MSC4244's `mls` object. */
  async claim(userId: string, devices: readonly string[], mls: Record<string, unknown> | null = mlsClaim()): Promise<Record<string, ClaimedPackage>> {
    const res = await this.client.json<{ one_time_keys: Record<string, Record<string, Record<string, { key: string }>>> }>('POST', '/v3/keys/claim', {
      one_time_keys: { [userId]: Object.fromEntries(devices.map((d) => [d, 'mls'])) },
      ...(mls === null ? {} : { mls }),
    });
    if (res.status !== 200) throw new Error(`keys/claim: ${res.status} ${JSON.stringify(res.body)}`);
    const out: Record<string, ClaimedPackage> = {};
    for (const [deviceId, keys] of Object.entries(res.body.one_time_keys[userId] ?? {})) {
      const [keyId, key] = Object.entries(keys)[0] ?? [];
      if (keyId !== undefined && key !== undefined) out[deviceId] = { keyId, keyPackage: key.key };
    }
    return out;
  }
}

/**
 * Creates a group as `creator` and adds every member (each uploads a KeyPackage through the keys
 * API, the creator claims it, commits epoch 0 → 1, members join from the Welcome the DS releases).
 */
export async function formGroup(creator: MlsMember, members: readonly MlsMember[], groupId: Uint8Array, family: 'm' | 'org.matrix.msc4244' = 'm'): Promise<void> {
  const t = mlsTypes(family);
  const packages: string[] = [];
  for (const m of members) {
    await m.uploadKeyPackages(1);
    const claimed = (await creator.claim(m.client.userId, [m.client.deviceId]))[m.client.deviceId];
    if (claimed === undefined) throw new Error(`no KeyPackage for ${m.client.userId}`);
    packages.push(claimed.keyPackage);
  }
  await creator.mls.createGroup(groupId);
  const pending = await creator.mls.commit(packages);
  const replies = await creator.ask(t.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: members.map((m) => m.ref) } });
  if (!replies.some((e) => e.type === t.commit && isOwnCommit(e, creator))) throw new Error(`group creation not accepted: ${JSON.stringify(replies)}`);
  creator.mls.apply(pending);
  for (const m of members) {
    const welcome = (await m.inbox.ofType(t.welcome))[0];
    if (welcome === undefined) throw new Error(`${m.client.userId} got no Welcome`);
    await m.mls.join(String(welcome.content.welcome));
  }
}

/** Whether a commit event is the DS's acceptance of this member's own commit (MSC4244: it goes to the committer too). */
export function isOwnCommit(e: ToDeviceEventJson, member: MlsMember): boolean {
  const sender = e.content.sender as { user_id?: string; device_id?: string } | undefined;
  return sender?.user_id === member.client.userId && sender.device_id === member.client.deviceId;
}
