import { describe, expect, it } from 'vitest';
import { MatrixError } from '../src/errors/matrix-error.ts';
import { MAX_CONTENT_BYTES } from '../src/shared/content-checks.ts';
import { canonicalJson } from '../src/shared/canonical-json.ts';
import { planSend, type PlanContext, type SendToDeviceInput } from '../src/services/send-plan.ts';

/** The send plan alone: no database, no server, no counters. */
const SERVER = 'ours.test';
const context = (appservices: Record<string, { appserviceId: string; exclusive: boolean }[]> = {}): PlanContext => ({
  serverName: SERVER,
  appserviceRecipients: (userId) => appservices[userId] ?? [],
});
const input = (messages: SendToDeviceInput['messages'], extra: Partial<SendToDeviceInput> = {}): SendToDeviceInput => ({
  sender: '@alice:ours.test',
  senderDevice: 'A',
  type: 'm.test',
  origin: 'client',
  messages,
  ...extra,
});

describe('the send plan', () => {
  it('splits local, remote and server-user messages, and encodes each content once as canonical JSON', () => {
    const plan = planSend(
      input({
        '@bob:ours.test': { PHONE: { b: 2, a: 1 }, '*': { all: true } },
        '@carol:theirs.test': { X: { n: 1 } },
        '@:ours.test': { '': { ping: 1 } },
        '@:theirs.test': { '': { remote: 'server user' } },
      }),
      context(),
    );
    expect(plan.local).toEqual([
      { userId: '@bob:ours.test', deviceId: 'PHONE', content: '{"a":1,"b":2}' },
      { userId: '@bob:ours.test', deviceId: '*', content: '{"all":true}' },
    ]);
    expect(plan.remote).toEqual([
      { destination: 'theirs.test', userId: '@carol:theirs.test', deviceId: 'X', content: '{"n":1}' },
      { destination: 'theirs.test', userId: '@:theirs.test', deviceId: '', content: '{"remote":"server user"}' },
    ]);
    expect(plan.serverUser).toEqual([{ type: 'm.test', sender: '@alice:ours.test', senderDevice: 'A', origin: 'client', content: { ping: 1 } }]);
    expect(plan.dropped).toEqual({});
    expect(plan.weight).toBe(4);
  });

  it('gives the server user one message for "" and "*" together, and drops its other devices', () => {
    const plan = planSend(input({ '@:ours.test': { '': { n: 1 }, '*': { n: 2 }, OTHER: { n: 3 } } }), context());
    expect(plan.serverUser.map((m) => m.content)).toEqual([{ n: 1 }]);
    expect(plan.dropped).toEqual({ server_user_device: 2 });
    expect(planSend(input({ '@:ours.test': { '*': { n: 2 } } }), context()).serverUser.map((m) => m.content)).toEqual([{ n: 2 }]);
  });

  it('drops invalid user ids, and other servers\u2019 users when only local ones may be addressed (federation)', () => {
    const plan = planSend(input({ 'not-a-user': { A: {}, B: {} }, '@carol:theirs.test': { X: {} } }, { localOnly: true }), context());
    expect(plan.remote).toEqual([]);
    expect(plan.dropped).toEqual({ invalid_user: 2, not_local: 1 });
  });

  it('owes appservices a copy of their users\u2019 messages (MSC4203)', () => {
    const plan = planSend(input({ '@bridged:ours.test': { D: {} }, '@bob:ours.test': { P: {} } }), context({ '@bridged:ours.test': [{ appserviceId: 'as1', exclusive: true }] }));
    expect(plan.appservices).toEqual([{ userId: '@bridged:ours.test', appserviceId: 'as1', exclusive: true }]);
  });

  it('keys each target of a request cancellation, except users an appservice also receives (MSC3944)', () => {
    const cancel = { action: 'request_cancellation', requesting_device_id: 'A', request_id: 'r1' };
    const plan = planSend(
      input({ '@bob:ours.test': { P: cancel }, '@bridged:ours.test': { D: cancel } }, { type: 'm.room_key_request' }),
      context({ '@bridged:ours.test': [{ appserviceId: 'as1', exclusive: false }] }),
    );
    expect(plan.cancels).toEqual([{ requestingDeviceId: 'A', requestId: 'r1' }, null]);
    expect(planSend(input({ '@bob:ours.test': { P: { action: 'request', requesting_device_id: 'A', request_id: 'r1' } } }, { type: 'm.room_key_request' }), context()).cancels).toBeNull();
    expect(planSend(input({ '@bob:ours.test': { P: cancel } }), context()).cancels).toBeNull();
  });

  it('refuses the whole request when one content is over the cap or not canonical JSON', () => {
    const big = { pad: 'x'.repeat(MAX_CONTENT_BYTES) };
    for (const [content, errcode] of [
      [big, 'M_TOO_LARGE'],
      [{ n: 1.5 }, 'M_BAD_JSON'],
    ] as const) {
      let error: unknown = null;
      try {
        planSend(input({ '@bob:ours.test': { P: { ok: true } }, '@carol:theirs.test': { X: content } }), context());
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(MatrixError);
      expect((error as MatrixError).errcode).toBe(errcode);
    }
    // Multi-byte text is measured in UTF-8 bytes, not characters.
    const wide = { pad: '\u00e9'.repeat(MAX_CONTENT_BYTES / 2) };
    expect(() => planSend(input({ '@bob:ours.test': { P: wide } }), context())).toThrow(MatrixError);
  });
});

describe('the send plan, on random requests', () => {
  it('accounts for every message exactly once, keeps each where its user id says, and encodes what was given', () => {
    const random = seeded(20261205);
    const servers = [SERVER, 'theirs.test', 'other.test'];
    for (let round = 0; round < 500; round++) {
      const messages: SendToDeviceInput['messages'] = {};
      const users = 1 + Math.floor(random() * 6);
      for (let u = 0; u < users; u++) {
        const roll = random();
        const server = servers[Math.floor(random() * servers.length)] as string;
        const userId = roll < 0.1 ? `bad-${u}` : roll < 0.2 ? `@:${server}` : `@u${u}:${server}`;
        const byDevice: Record<string, Record<string, unknown>> = {};
        const devices = 1 + Math.floor(random() * 4);
        for (let d = 0; d < devices; d++) {
          const deviceId = random() < 0.2 ? '*' : random() < 0.2 ? '' : `D${d}`;
          byDevice[deviceId] = { z: round, a: [d, { y: 'é', b: null }] };
        }
        messages[userId] = byDevice;
      }
      const localOnly = random() < 0.3;
      const plan = planSend(input(messages, { localOnly }), context());
      const total = Object.values(messages).reduce((n, byDevice) => n + Object.keys(byDevice).length, 0);
      const dropped = Object.values(plan.dropped).reduce((n, k) => n + (k ?? 0), 0);
      expect(plan.local.length + plan.remote.length + plan.serverUser.length + dropped, `round ${round}`).toBe(total);
      for (const t of plan.local) {
        expect(t.userId.endsWith(`:${SERVER}`) && t.userId !== `@:${SERVER}`).toBe(true);
        expect(t.content).toBe(canonicalJson(messages[t.userId]?.[t.deviceId]));
      }
      for (const m of plan.remote) {
        expect(localOnly).toBe(false);
        expect(m.destination).not.toBe(SERVER);
        expect(m.userId.endsWith(`:${m.destination}`)).toBe(true);
        expect(JSON.parse(m.content)).toEqual(messages[m.userId]?.[m.deviceId]);
      }
      expect(plan.serverUser.length).toBeLessThanOrEqual(1);
      expect(plan.weight).toBe(Math.max(1, plan.local.length + plan.remote.length));
      // Pure: the same request plans the same.
      expect(planSend(input(messages, { localOnly }), context())).toEqual(plan);
    }
  });
});

/** A small deterministic generator, so a failing round can be replayed. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let x = s;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}
