import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import franking from '../handlers/franking/index.ts';
import { frankingTag, signedFrankBytes } from '../handlers/franking/frank.ts';
import { verifyBytes } from '../src/shared/ed25519.ts';
import type { HandlerModule } from '../src/sdk/define-handler.ts';
import { TestClient, type ToDeviceEventJson } from './support/client.ts';
import { Inbox } from './support/inbox.ts';
import { SERVER_NAME, startTestApp, type TestApp } from './support/test-app.ts';

const SERVER_USER = `@:${SERVER_NAME}`;
const P = 'org.example.franking';
const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64').replace(/=+$/, '');

let t: TestApp;
let alice: TestClient;
let bob: TestClient;
let mod: TestClient;
const inboxes = new Map<TestClient, Inbox>();

async function ask(c: TestClient, type: string, content: Record<string, unknown>): Promise<ToDeviceEventJson> {
  const res = await c.sendToDevice(type, { [SERVER_USER]: { '': content } });
  expect(res.status).toBe(200);
  let inbox = inboxes.get(c);
  if (inbox === undefined) inboxes.set(c, (inbox = new Inbox(c)));
  const events = await inbox.take();
  expect(events).toHaveLength(1);
  return events[0] as ToDeviceEventJson;
}

interface Franked {
  franking_tag: string;
  context: string;
  sender: string;
  accepted_ts: number;
  key_version: number;
  server_frank: string;
  signature: string;
}

/** Alice franks a message for Bob: what her client would attach to the (encrypted) message. */
async function frankFor(message: string, context: string): Promise<{ frankingKey: Buffer; frank: Franked }> {
  const frankingKey = randomBytes(32);
  const reply = await ask(alice, `${P}.frank`, { franking_tag: b64(frankingTag(frankingKey, Buffer.from(message))), context });
  expect(reply.type).toBe(`${P}.franked`);
  return { frankingKey, frank: reply.content as unknown as Franked };
}

function report(message: string, frankingKey: Buffer, f: Franked, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const { signature: _signature, ...fields } = f;
  return { message, franking_key: b64(frankingKey), ...fields, ...overrides };
}

async function publicKey(version: number): Promise<Buffer> {
  const keys = (await ask(bob, `${P}.keys`, {})).content as { keys: { version: number; public_key: string }[] };
  return Buffer.from(keys.keys.find((k) => k.version === version)?.public_key ?? '', 'base64');
}

beforeAll(async () => {
  t = await startTestApp({}, [{ module: franking as HandlerModule<unknown>, config: { moderators: [`@mod:${SERVER_NAME}`] } }]);
  alice = await TestClient.register(t.app, 'alice');
  bob = await TestClient.register(t.app, 'bob');
  mod = await TestClient.register(t.app, 'mod');
});
afterAll(() => t.close());

describe('franking', () => {
  it('franks a tag, and the recipient verifies the signature with the published key', async () => {
    const { frank } = await frankFor('hello bob', bob.userId);
    expect(frank).toMatchObject({ context: bob.userId, sender: alice.userId, key_version: 1, accepted_ts: expect.any(Number) });
    const fields = { frankingTag: Buffer.from(frank.franking_tag, 'base64'), context: frank.context, acceptedTs: frank.accepted_ts, sender: frank.sender };
    const signed = signedFrankBytes(frank.key_version, fields, Buffer.from(frank.server_frank, 'base64'));
    const key = await publicKey(1);
    expect(verifyBytes(key, signed, Buffer.from(frank.signature, 'base64'))).toBe(true);
    // A frank attributed to someone else does not verify.
    const forged = signedFrankBytes(frank.key_version, { ...fields, sender: bob.userId }, Buffer.from(frank.server_frank, 'base64'));
    expect(verifyBytes(key, forged, Buffer.from(frank.signature, 'base64'))).toBe(false);
  });

  it('verifies a recipient\'s report, stores it once, and shows it to moderators only', async () => {
    const { frankingKey, frank } = await frankFor('you are awful', bob.userId);
    const verdict = await ask(bob, `${P}.report`, { ...report('you are awful', frankingKey, frank), reason: 'harassment', request_id: 'r1' });
    expect(verdict).toEqual({ sender: SERVER_USER, type: `${P}.verdict`, content: { request_id: 'r1', verdict: 'verified', report_id: expect.any(Number) } });
    const again = await ask(bob, `${P}.report`, report('you are awful', frankingKey, frank));
    expect(again.content.report_id).toBe(verdict.content.report_id);
    // Another spelling of the same frank (base64's unused low bits in the last character) is the same report.
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
    const last = frank.server_frank.replace(/=+$/, '').slice(-1);
    const respelled = `${frank.server_frank.replace(/=+$/, '').slice(0, -1)}${alphabet[alphabet.indexOf(last) ^ 1] ?? ''}`;
    expect(Buffer.from(respelled, 'base64')).toEqual(Buffer.from(frank.server_frank, 'base64'));
    const respelledReport = await ask(bob, `${P}.report`, report('you are awful', frankingKey, frank, { server_frank: respelled }));
    expect(respelledReport.content).toMatchObject({ verdict: 'verified', report_id: verdict.content.report_id });

    const listed = await ask(mod, `${P}.list_reports`, { request_id: 'l1' });
    expect(listed.type).toBe(`${P}.reports`);
    expect(listed.content.reports).toEqual([
      {
        report_id: verdict.content.report_id,
        reporter: bob.userId,
        sender: alice.userId,
        context: bob.userId,
        accepted_ts: frank.accepted_ts,
        key_version: 1,
        message: 'you are awful',
        reason: 'harassment',
        received_ts: expect.any(Number),
      },
    ]);
    expect(await ask(bob, `${P}.list_reports`, { request_id: 'l2' })).toMatchObject({ type: `${P}.error`, content: { request_id: 'l2', errcode: 'M_FORBIDDEN' } });
  });

  it('refuses reports whose message, context, sender, time, frank or key version were tampered with', async () => {
    const { frankingKey, frank } = await frankFor('the real message', bob.userId);
    const cases: [Record<string, unknown>, string][] = [
      [{ message: 'a different message' }, 'franking_tag_mismatch'],
      // Without the tag, the server recomputes it from the message, and its own frank no longer matches.
      [{ message: 'a different message', franking_tag: undefined }, 'frank_mismatch'],
      [{ franking_key: b64(randomBytes(32)) }, 'franking_tag_mismatch'],
      [{ franking_key: b64(randomBytes(32)), franking_tag: undefined }, 'frank_mismatch'],
      [{ context: '!room:elsewhere' }, 'frank_mismatch'],
      [{ context: alice.userId }, 'not_recipient'],
      [{ sender: `@mallory:${SERVER_NAME}` }, 'frank_mismatch'],
      [{ accepted_ts: frank.accepted_ts + 1 }, 'frank_mismatch'],
      [{ server_frank: b64(randomBytes(32)) }, 'frank_mismatch'],
      [{ server_frank: 'AAAA' }, 'frank_mismatch'],
      [{ key_version: 99 }, 'unknown_key_version'],
      [{ franking_tag: 'AAAA' }, 'malformed'],
    ];
    for (const [overrides, reason] of cases) {
      const verdict = await ask(bob, `${P}.report`, report('the real message', frankingKey, frank, overrides));
      expect({ overrides, content: verdict.content }).toMatchObject({ overrides, content: { verdict: 'rejected', reason } });
    }
    // Nothing of it was stored.
    const listed = (await ask(mod, `${P}.list_reports`, {})).content.reports as { message: string }[];
    expect(listed.map((r) => r.message)).not.toContain('the real message');
  });

  it('answers a franking tag of the wrong length with an error', async () => {
    expect(await ask(alice, `${P}.frank`, { franking_tag: b64(randomBytes(16)), context: bob.userId })).toMatchObject({
      type: `${P}.error`,
      content: { errcode: 'M_INVALID_PARAM' },
    });
  });

  it('rotates keys: new franks use the new version, franks made before still verify and can be reported', async () => {
    const before = await frankFor('sent before rotation', bob.userId);
    expect(await ask(alice, `${P}.rotate_key`, {})).toMatchObject({ type: `${P}.error`, content: { errcode: 'M_FORBIDDEN' } });
    const rotated = await ask(mod, `${P}.rotate_key`, {});
    expect(rotated.content).toMatchObject({
      current_version: 2,
      keys: [
        { version: 1, retired_ts: expect.any(Number) },
        { version: 2, retired_ts: null },
      ],
    });
    const after = await frankFor('sent after rotation', bob.userId);
    expect(after.frank.key_version).toBe(2);
    expect(await publicKey(1)).not.toEqual(await publicKey(2));

    for (const [message, { frankingKey, frank }] of [
      ['sent before rotation', before],
      ['sent after rotation', after],
    ] as const) {
      const fields = { frankingTag: Buffer.from(frank.franking_tag, 'base64'), context: frank.context, acceptedTs: frank.accepted_ts, sender: frank.sender };
      const signed = signedFrankBytes(frank.key_version, fields, Buffer.from(frank.server_frank, 'base64'));
      expect(verifyBytes(await publicKey(frank.key_version), signed, Buffer.from(frank.signature, 'base64'))).toBe(true);
      expect((await ask(bob, `${P}.report`, report(message, frankingKey, frank))).content).toMatchObject({ verdict: 'verified' });
    }
    // A version-1 frank does not pass as a version-2 one.
    expect((await ask(bob, `${P}.report`, report('sent before rotation', before.frankingKey, before.frank, { key_version: 2 }))).content).toMatchObject({
      verdict: 'rejected',
      reason: 'frank_mismatch',
    });
  });

  it('lists reports to moderators over an authenticated HTTP endpoint, and to nobody else', async () => {
    const { frankingKey, frank } = await frankFor('listed over http', bob.userId);
    const verdict = await ask(bob, `${P}.report`, { ...report('listed over http', frankingKey, frank), reason: 'spam' });
    const reportId = Number(verdict.content.report_id);
    const path = `/unstable/${P}/reports`;

    const listed = await mod.json<{ reports: Record<string, unknown>[]; next_since?: number }>('GET', `${path}?since=${reportId - 1}&limit=1`);
    expect(listed).toEqual({
      status: 200,
      body: {
        reports: [
          {
            report_id: reportId,
            reporter: bob.userId,
            sender: alice.userId,
            context: bob.userId,
            accepted_ts: frank.accepted_ts,
            key_version: frank.key_version,
            message: 'listed over http',
            reason: 'spam',
            received_ts: expect.any(Number),
          },
        ],
        next_since: reportId,
      },
    });
    // The whole list, oldest first, holds every verified report and nothing rejected.
    const all = await mod.json<{ reports: { report_id: number; message: string }[]; next_since?: number }>('GET', path);
    expect(all.status).toBe(200);
    expect(all.body.reports.map((r) => r.message)).toContain('listed over http');
    expect(all.body.reports.map((r) => r.message)).not.toContain('the real message');
    expect(all.body.reports.map((r) => r.report_id)).toEqual([...all.body.reports.map((r) => r.report_id)].sort((a, b) => a - b));
    expect(all.body.next_since).toBeUndefined();

    for (const who of [alice, bob]) {
      expect(await who.json('GET', path)).toEqual({ status: 403, body: { errcode: 'M_FORBIDDEN', error: 'Only moderators can list reports' } });
    }
    const anonymous = await t.app.request(`/_matrix/client${path}`);
    expect({ status: anonymous.status, body: await anonymous.json() }).toMatchObject({ status: 401, body: { errcode: 'M_MISSING_TOKEN' } });
    const badToken = await t.app.request(`/_matrix/client${path}`, { headers: { authorization: 'Bearer not-a-token' } });
    expect({ status: badToken.status, body: await badToken.json() }).toMatchObject({ status: 401, body: { errcode: 'M_UNKNOWN_TOKEN' } });
    for (const query of ['limit=0', 'limit=101', 'limit=x', 'since=-1', 'since=1e999']) {
      expect(await mod.json('GET', `${path}?${query}`)).toMatchObject({ status: 400, body: { errcode: 'M_INVALID_PARAM' } });
    }
    expect(await mod.json('GET', `/unstable/${P}/nothing-here`)).toMatchObject({ status: 404, body: { errcode: 'M_UNRECOGNIZED' } });
  });
});
