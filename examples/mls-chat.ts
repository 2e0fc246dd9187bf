/**
 * Three clients run an MLS group (RFC 9420, with ts-mls) through the server user's delivery
 * service (handlers/mls), as MSC4244 has it: KeyPackages uploaded and claimed through the keys
 * API (`mls:` one-time keys, the `mls` claim object), `m.mls.message` to `@:<server>`, `m.mls.commit`
 * to every joined device, a group created, a member added
 * (its Welcome released only after the commit was accepted), application messages, and two
 * commits racing for one epoch — one accepted, the other rejected with the current epoch.
 *
 *   npm run start:handlers        # the server with the mls and franking modules loaded
 *   npm run example:mls           # HOMESERVER=http://host:port to point elsewhere
 */
import { randomBytes } from 'node:crypto';
import { MlsDevice, type PendingCommit } from './support/mls-device.ts';
import { MatrixSession } from './support/matrix-session.ts';

const homeserver = process.env.HOMESERVER ?? 'http://127.0.0.1:8008';
const T = {
  message: 'm.mls.message',
  rejected: 'm.mls.rejected',
  commit: 'm.mls.commit',
  welcome: 'm.mls.welcome',
  relay: 'm.mls.relay',
};
const SUITE = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519';

interface Client {
  name: string;
  session: MatrixSession;
  mls: MlsDevice;
}

async function client(name: string): Promise<Client> {
  const session = await MatrixSession.signIn(homeserver, `mls-example-${name}`, `mls-example-${name}-password`);
  return { name, session, mls: await MlsDevice.create(session.userId, session.deviceId) };
}

async function uploadKeyPackages(c: Client): Promise<void> {
  const res = await c.session.request('POST', '/v3/keys/upload', { one_time_keys: await c.mls.mlsKeys(2), fallback_keys: await c.mls.mlsKeys(1, { lastResort: true }) });
  if (res.status !== 200) throw new Error(`keys/upload: ${res.status} ${JSON.stringify(res.json)}`);
  const counts = res.json.one_time_key_counts as Record<string, number>;
  console.log(`${c.name} uploads 2 KeyPackages + a last-resort one (fallback key) → ${String(counts.mls)} mls one-time keys on the server`);
}

async function claim(by: Client, of: Client): Promise<string> {
  const res = await by.session.request('POST', '/v3/keys/claim', {
    one_time_keys: { [of.session.userId]: { [of.session.deviceId]: 'mls' } },
    mls: { protocol_version: 'm.mls_10', acceptable_ciphersuites: [SUITE] },
  });
  const keys = (res.json.one_time_keys as Record<string, Record<string, Record<string, { key: string }>>> | undefined)?.[of.session.userId]?.[of.session.deviceId];
  const [keyId, key] = Object.entries(keys ?? {})[0] ?? [];
  if (keyId === undefined || key === undefined) throw new Error(`no KeyPackage for ${of.name}'s device`);
  console.log(`${by.name} claims a KeyPackage of ${of.name}'s device ${of.session.deviceId} → ${keyId}`);
  return key.key;
}

/** Sends a commit and waits for the DS's verdict: the new epoch, or the group's current epoch on rejection. */
async function sendCommit(c: Client, pending: PendingCommit, added: Client[]): Promise<{ accepted: boolean; epoch: number; reason?: string }> {
  const commitInfo = pending.welcome === undefined ? {} : { commit_info: { welcome: pending.welcome, added: added.map((a) => ({ user_id: a.session.userId, device_id: a.session.deviceId })) } };
  await c.session.toServer(T.message, { message: pending.message, ...commitInfo });
  // MSC4244: the accepted commit goes to every joined device, the committer too; its own copy is the answer.
  const own = (e: { type: string; content: Record<string, unknown> }) =>
    e.type === T.commit && (e.content.sender as { device_id?: string } | undefined)?.device_id === c.session.deviceId && (e.content.sender as { user_id?: string }).user_id === c.session.userId;
  const verdict = await c.session.next((e) => own(e) || e.type === T.rejected);
  if (verdict.type === T.commit) {
    c.mls.apply(pending);
    return { accepted: true, epoch: Number(verdict.content.epoch) };
  }
  return { accepted: false, epoch: Number(verdict.content.epoch), reason: String(verdict.content.reason) };
}

async function join(c: Client): Promise<void> {
  const welcome = await c.session.nextOfType(T.welcome);
  await c.mls.join(String(welcome.content.welcome));
  console.log(`  ${c.name}: Welcome received after acceptance → joined at epoch ${c.mls.epoch}`);
}

async function applyCommit(c: Client): Promise<void> {
  const commit = await c.session.nextOfType(T.commit);
  await c.mls.receive(String(commit.content.message));
  console.log(`  ${c.name} applies the accepted commit → epoch ${c.mls.epoch}`);
}

async function say(from: Client, text: string, to: Client[]): Promise<void> {
  await from.session.toServer(T.message, { message: await from.mls.encrypt(text) });
  console.log(`${from.name} → group: "${text}"`);
  for (const c of to) {
    const relayed = await c.session.nextOfType(T.relay);
    console.log(`  ${c.name} decrypts: "${String(await c.mls.receive(String(relayed.content.message)))}"`);
  }
}

async function main(): Promise<void> {
  const [alice, bob, carol] = [await client('alice'), await client('bob'), await client('carol')];
  console.log(`signed in as ${[alice, bob, carol].map((c) => c.session.userId).join(', ')}; delivery service ${alice.session.serverUser}`);

  await uploadKeyPackages(bob);
  await uploadKeyPackages(carol);
  const bobPackage = await claim(alice, bob);

  await alice.mls.createGroup(randomBytes(16));
  console.log(`alice creates group ${alice.mls.groupId} and commits epoch 0 adding bob`);
  const created = await sendCommit(alice, await alice.mls.commit([bobPackage]), [bob]);
  console.log(`  DS: accepted, group now at epoch ${created.epoch}`);
  await join(bob);

  await say(alice, 'Hi Bob!', [bob]);
  await say(bob, 'Hi Alice!', [alice]);

  // The race: both commit in epoch 1 at once. The DS accepts exactly one.
  const carolPackage = await claim(alice, carol);
  console.log(`race: alice (adding carol) and bob (updating his keys) both commit at epoch ${alice.mls.epoch}`);
  const alicesCommit = await alice.mls.commit([carolPackage]);
  const bobsCommit = await bob.mls.commit();
  const [a, b] = await Promise.all([sendCommit(alice, alicesCommit, [carol]), sendCommit(bob, bobsCommit, [])]);
  const [winner, loser, lost] = a.accepted ? [alice, bob, b] : [bob, alice, a];
  console.log(`  DS accepted ${winner.name}'s commit → epoch ${winner.mls.epoch}`);
  console.log(`  DS rejected ${loser.name}'s commit: ${String(lost.reason)} (current epoch ${lost.epoch})`);
  await applyCommit(loser);
  if (winner === bob) {
    const early = (await carol.session.drain()).filter((e) => e.type === T.welcome);
    console.log(`  carol has received ${early.length} Welcome(s): the losing commit's Welcome was never released`);
    console.log(`alice retries adding carol at epoch ${alice.mls.epoch}`);
    const retried = await sendCommit(alice, await alice.mls.commit([carolPackage]), [carol]);
    if (!retried.accepted) throw new Error(`retry rejected: ${String(retried.reason)}`);
    console.log(`  DS: accepted, group now at epoch ${retried.epoch}`);
    await applyCommit(bob);
  }
  await join(carol);

  await say(carol, 'Hello both, I am in!', [alice, bob]);
  console.log(`done: alice, bob and carol all at epoch ${[alice, bob, carol].map((c) => c.mls.epoch).join('/')}`);
  for (const c of [alice, bob, carol]) await c.session.logout();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
