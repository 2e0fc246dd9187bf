import { MlsDevice } from '../../examples/support/mls-device.ts';
import type { TestClient, ToDeviceEventJson } from './client.ts';
import { Inbox } from './inbox.ts';

export const T = {
  upload: 'org.matrix.msc4244.key_packages.upload',
  uploaded: 'org.matrix.msc4244.key_packages.uploaded',
  claim: 'org.matrix.msc4244.key_packages.claim',
  claimed: 'org.matrix.msc4244.key_packages.claimed',
  count: 'org.matrix.msc4244.key_packages.count',
  counted: 'org.matrix.msc4244.key_packages.counted',
  error: 'org.matrix.msc4244.key_packages.error',
  message: 'org.matrix.msc4244.mls.message',
  accepted: 'org.matrix.msc4244.mls.accepted',
  rejected: 'org.matrix.msc4244.mls.rejected',
  commit: 'org.matrix.msc4244.mls.commit',
  welcome: 'org.matrix.msc4244.mls.welcome',
  relay: 'org.matrix.msc4244.mls.relay',
} as const;

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

  static async of(client: TestClient): Promise<MlsMember> {
    const serverUser = `@:${client.userId.slice(client.userId.indexOf(':') + 1)}`;
    return new MlsMember(client, await MlsDevice.create(client.userId, client.deviceId), serverUser);
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

  async uploadKeyPackages(n: number, lastResort = false): Promise<string[]> {
    const packages = await Promise.all(Array.from({ length: n }, () => this.mls.keyPackage()));
    const extra = lastResort ? { last_resort: await this.mls.keyPackage() } : {};
    await this.ask(T.upload, { key_packages: packages, ...extra });
    return packages;
  }

  async claim(userId: string): Promise<Record<string, { key_package: string; last_resort: boolean }>> {
    const events = await this.ask(T.claim, { user_id: userId });
    const claimed = events.find((e) => e.type === T.claimed);
    if (claimed === undefined) throw new Error(`no claim reply: ${JSON.stringify(events)}`);
    return claimed.content.key_packages as Record<string, { key_package: string; last_resort: boolean }>;
  }
}

/**
 * Creates a group as `creator` and adds every member (each uploads a KeyPackage, the creator
 * claims it, commits epoch 0 → 1, members join from the Welcome the DS releases).
 */
export async function formGroup(creator: MlsMember, members: readonly MlsMember[], groupId: Uint8Array): Promise<void> {
  const packages: string[] = [];
  for (const m of members) {
    await m.uploadKeyPackages(1);
    const claimed = Object.values(await creator.claim(m.client.userId));
    if (claimed[0] === undefined) throw new Error(`no KeyPackage for ${m.client.userId}`);
    packages.push(claimed[0].key_package);
  }
  await creator.mls.createGroup(groupId);
  const pending = await creator.mls.commit(packages);
  const replies = await creator.ask(T.message, { message: pending.message, commit_info: { welcome: pending.welcome, added: members.map((m) => m.ref) } });
  if (!replies.some((e) => e.type === T.accepted)) throw new Error(`group creation not accepted: ${JSON.stringify(replies)}`);
  creator.mls.apply(pending);
  for (const m of members) {
    const welcome = (await m.inbox.ofType(T.welcome))[0];
    if (welcome === undefined) throw new Error(`${m.client.userId} got no Welcome`);
    await m.mls.join(String(welcome.content.welcome));
  }
}
