/**
 * Message franking for abuse reports (handlers/franking), end to end: Alice franks a message
 * to Bob, Bob verifies the frank as its recipient, reports it and gets the verdict, a moderator
 * lists the report over HTTP (Bob, no moderator, may not); then two forged reports are refused.
 *
 *   npm run start:handlers        # the server with the mls and franking modules loaded
 *   npm run example:franking      # HOMESERVER=http://host:port, MODERATOR=<username> to point elsewhere
 */
import { createPublicKey, randomBytes, verify } from 'node:crypto';
import { frankingTag, signedFrankBytes } from '../handlers/franking/frank.ts';
import { MatrixSession } from './support/matrix-session.ts';

const homeserver = process.env.HOMESERVER ?? 'http://127.0.0.1:8008';
const moderatorName = process.env.MODERATOR ?? 'franking-moderator';
const P = 'org.example.franking';
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64').replace(/=+$/, '');

interface Frank {
  franking_tag: string;
  context: string;
  sender: string;
  accepted_ts: number;
  key_version: number;
  server_frank: string;
  signature: string;
}

/** What a recipient checks before trusting (or reporting) a franked message. */
async function verifyAsRecipient(bob: MatrixSession, message: string, frankingKey: Buffer, frank: Frank, from: string): Promise<void> {
  const tagOk = b64(frankingTag(frankingKey, Buffer.from(message))) === frank.franking_tag.replace(/=+$/, '');
  console.log(`  bob: franking tag matches the message: ${tagOk ? 'yes' : 'NO'}`);
  await bob.toServer(`${P}.keys`, {});
  const keys = (await bob.nextOfType(`${P}.public_keys`)).content.keys as { version: number; public_key: string }[];
  const published = keys.find((k) => k.version === frank.key_version);
  if (published === undefined) throw new Error(`no published key ${frank.key_version}`);
  const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(published.public_key, 'base64').toString('base64url') }, format: 'jwk' });
  const fields = { frankingTag: Buffer.from(frank.franking_tag, 'base64'), context: frank.context, acceptedTs: frank.accepted_ts, sender: frank.sender };
  const signed = signedFrankBytes(frank.key_version, fields, Buffer.from(frank.server_frank, 'base64'));
  const sigOk = verify(null, signed, publicKey, Buffer.from(frank.signature, 'base64'));
  console.log(`  bob: server signature verifies with published key v${frank.key_version}: ${sigOk ? 'yes' : 'NO'}`);
  console.log(`  bob: frank names sender ${frank.sender} and context ${frank.context}: ${frank.sender === from && frank.context === bob.userId ? 'yes' : 'NO'}`);
  if (!tagOk || !sigOk) throw new Error('frank did not verify');
}

async function report(bob: MatrixSession, body: Record<string, unknown>): Promise<Record<string, unknown>> {
  await bob.toServer(`${P}.report`, body);
  return (await bob.nextOfType(`${P}.verdict`)).content;
}

async function main(): Promise<void> {
  const alice = await MatrixSession.signIn(homeserver, 'franking-alice', 'franking-alice-password');
  const bob = await MatrixSession.signIn(homeserver, 'franking-bob', 'franking-bob-password');
  const moderator = await MatrixSession.signIn(homeserver, moderatorName, `${moderatorName}-password`);
  console.log(`signed in as ${alice.userId}, ${bob.userId} and ${moderator.userId}; franking by ${alice.serverUser}`);

  // 1. Alice's client commits to the message with a fresh franking key; the server franks the tag.
  const message = `You will regret this (${new Date().toISOString()})`;
  const frankingKey = randomBytes(32);
  await alice.toServer(`${P}.frank`, { franking_tag: b64(frankingTag(frankingKey, Buffer.from(message))), context: bob.userId });
  const frank = (await alice.nextOfType(`${P}.franked`)).content as unknown as Frank;
  console.log(`alice: franking_tag = HMAC-SHA256(franking_key, message) → server frank with key v${frank.key_version} at ${frank.accepted_ts}`);

  // 2. The message travels with its franking key and frank (in a real client, inside the E2E-encrypted payload).
  await alice.send(bob.userId, bob.deviceId, 'org.example.chat', { body: message, franking_key: b64(frankingKey), frank });
  const received = await bob.next((e) => e.type === 'org.example.chat' && e.sender === alice.userId);
  console.log(`bob receives from ${received.sender}: "${String(received.content.body)}"`);
  await verifyAsRecipient(bob, String(received.content.body), frankingKey, frank, received.sender);

  // 3. Bob reports it: the server recomputes both MACs before storing anything.
  const { signature: _signature, ...frankFields } = frank;
  const genuine = { message, franking_key: b64(frankingKey), ...frankFields, reason: 'threat' };
  const verdict = await report(bob, genuine);
  console.log(`bob reports the message → verdict: ${String(verdict.verdict)} (report #${String(verdict.report_id)})`);

  // Moderators read reports over HTTP, authenticated by their access token like any client request.
  const reportsPath = `/unstable/${P}/reports?since=${Number(verdict.report_id) - 1}&limit=1`;
  const listing = await moderator.request('GET', reportsPath);
  if (listing.status !== 200) console.log(`moderator cannot list reports: ${listing.status} ${String(listing.json.errcode)} (is ${moderator.userId} in the franking module's moderators?)`);
  const listed = (listing.json.reports ?? []) as { report_id: number; sender: string; message: string; reason: string }[];
  for (const r of listed) console.log(`moderator lists report #${r.report_id}: from ${r.sender}, "${r.message}" (${r.reason})`);
  const refused = await bob.request('GET', reportsPath);
  console.log(`bob (not a moderator) lists reports → ${refused.status} ${String(refused.json.errcode)}`);

  // 4. Forgeries: a different message, or pinning it on someone else.
  const forgedMessage = await report(bob, { ...genuine, message: 'Alice said something else entirely' });
  console.log(`forged report (message changed) → verdict: ${String(forgedMessage.verdict)} (${String(forgedMessage.reason)})`);
  const { franking_tag: _tag, ...withoutTag } = genuine;
  const forgedSender = await report(bob, { ...withoutTag, sender: moderator.userId });
  console.log(`forged report (sender changed) → verdict: ${String(forgedSender.verdict)} (${String(forgedSender.reason)})`);

  for (const s of [alice, bob, moderator]) await s.logout();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
