/**
 * Three clients run an MLS group (RFC 9420, with ts-mls) through the server user's delivery
 * service (handlers/mls): KeyPackages uploaded and claimed, a group created, a member added
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
  upload: 'org.matrix.msc4244.key_packages.upload',
  uploaded: 'org.matrix.msc4244.key_packages.uploaded',
  claim: 'org.matrix.msc4244.key_packages.claim',
  claimed: 'org.matrix.msc4244.key_packages.claimed',
  message: 'org.matrix.msc4244.mls.message',
  accepted: 'org.matrix.msc4244.mls.accepted',
  rejected: 'org.matrix.msc4244.mls.rejected',
  commit: 'org.matrix.msc4244.mls.commit',
  welcome: 'org.matrix.msc4244.mls.welcome',
  relay: 'org.matrix.msc4244.mls.relay',
};

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
  const packages = [await c.mls.keyPackage(), await c.mls.keyPackage()];
  await c.session.toServer(T.upload, { key_packages: packages, last_resort: await c.mls.keyPackage() });
  const reply = (await c.session.nextOfType(T.uploaded)).content;
  console.log(`${c.name} uploads 2 KeyPackages + a last-resort one → accepted ${String(reply.accepted)}, ${String(reply.count)} one-time on the server`);
}

async function claim(by: Client, of: Client): Promise<string> {
  await by.session.toServer(T.claim, { user_id: of.session.userId });
  const packages = (await by.session.nextOfType(T.claimed)).content.key_packages as Record<string, { key_package: string; last_resort: boolean }>;
  const mine = packages[of.session.deviceId];
  if (mine === undefined) throw new Error(`no KeyPackage for ${of.name}'s device`);
  console.log(`${by.name} claims ${of.name}'s KeyPackages → device ${of.session.deviceId} (${mine.last_resort ? 'last resort' : 'one-time, now deleted on the server'})`);
  return mine.key_package;
}

/** Sends a commit and waits for the DS's verdict: the new epoch, or the group's current epoch on rejection. */
async function sendCommit(c: Client, pending: PendingCommit, added: Client[]): Promise<{ accepted: boolean; epoch: number; reason?: string }> {
  const commitInfo = pending.welcome === undefined ? {} : { commit_info: { welcome: pending.welcome, added: added.map((a) => ({ user_id: a.session.userId, device_id: a.session.deviceId })) } };
  await c.session.toServer(T.message, { message: pending.message, ...commitInfo });
  const verdict = await c.session.next((e) => e.type === T.accepted || e.type === T.rejected);
  if (verdict.type === T.accepted) {
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
