import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { MatrixError } from '../errors/matrix-error.ts';
import { canonicalJson } from '../shared/canonical-json.ts';
import { jsonValueProblem, MAX_FEDERATION_JSON_DEPTH } from '../matrix/input-checks.ts';
import { parseUserId } from '../shared/user-id.ts';
import type { Logger } from '../logger.ts';
import type { Counters } from '../metrics/counters.ts';
import type { SendToDeviceInput, ToDeviceService } from './to-device.ts';

const MAX_PDUS = 50;
const MAX_EDUS = 100;

const DirectToDeviceContent = v.object({
  sender: v.string(),
  type: v.pipe(v.string(), v.minLength(1)),
  message_id: v.pipe(v.string(), v.minLength(1)),
  messages: v.record(v.string(), v.record(v.string(), v.record(v.string(), v.unknown()))),
});

const DeviceListUpdateContent = v.object({
  user_id: v.string(),
  device_id: v.pipe(v.string(), v.minLength(1), v.maxLength(255)),
  stream_id: v.pipe(v.number(), v.integer(), v.minValue(0)),
  prev_id: v.optional(v.pipe(v.array(v.pipe(v.number(), v.integer())), v.maxLength(100)), []),
  deleted: v.optional(v.boolean(), false),
  keys: v.optional(v.record(v.string(), v.unknown())),
  device_display_name: v.optional(v.pipe(v.string(), v.maxLength(512))),
});

const SigningKeyUpdateContent = v.object({
  user_id: v.string(),
  master_key: v.optional(v.unknown()),
  self_signing_key: v.optional(v.unknown()),
});

/** Where device-list EDUs go (FederatedKeys); without it they are ignored. */
export interface DeviceListUpdates {
  applyDeviceListUpdate(content: v.InferOutput<typeof DeviceListUpdateContent>): Promise<void>;
  applySigningKeyUpdate(content: v.InferOutput<typeof SigningKeyUpdateContent>): Promise<void>;
}

const REJECTED = 'federation_edus_rejected_total';

/**
 * Applies an inbound federation transaction: refuses PDUs (this server has no rooms), applies
 * m.direct_to_device EDUs, ignores other EDU types. A failure to store throws, so the whole
 * transaction fails and the peer retries; an EDU that is wrong in itself is rejected alone.
 */
export class FederationInbound {
  constructor(
    private readonly toDevice: ToDeviceService,
    private readonly counters: Counters,
    private readonly log: Logger,
    private readonly deviceLists: DeviceListUpdates | null = null,
  ) {}

  async applyTransaction(origin: string, pdus: readonly unknown[], edus: readonly unknown[]): Promise<{ pdus: Record<string, { error: string }> }> {
    if (pdus.length > MAX_PDUS) throw new MatrixError('M_BAD_JSON', `A transaction may carry at most ${MAX_PDUS} PDUs`);
    if (edus.length > MAX_EDUS) throw new MatrixError('M_BAD_JSON', `A transaction may carry at most ${MAX_EDUS} EDUs`);
    const pduResults: Record<string, { error: string }> = {};
    for (const pdu of pdus) pduResults[eventIdOf(pdu)] = { error: 'This server does not take part in rooms' };

    const sends: SendToDeviceInput[] = [];
    const listUpdates: (() => Promise<void>)[] = [];
    for (const edu of edus) {
      if (typeof edu !== 'object' || edu === null) continue;
      const { edu_type: type, content } = edu as { edu_type?: unknown; content?: unknown };
      if (type === 'm.direct_to_device') {
        const send = this.directToDevice(origin, content);
        if (send !== null) sends.push(send);
      } else if ((type === 'm.device_list_update' || type === 'm.signing_key_update') && this.deviceLists !== null) {
        const apply = this.deviceListEdu(origin, type, content, this.deviceLists);
        if (apply !== null) listUpdates.push(apply);
      }
    }
    // One statement for all of them, in the order given: what `/version` promises as
    // "edus_in_order". A database failure throws, so the whole transaction fails and nothing of
    // it is stored; the peer sends it again.
    await this.toDevice.sendAll(sends, (_send, e) => this.reject(origin, 'bad_content', { errcode: e.errcode }));
    // Device-list updates one after another, in order: each follows the one before (`prev_id`).
    for (const apply of listUpdates) await apply();
    return { pdus: pduResults };
  }

  /** The send an m.direct_to_device EDU asks for, or null (and a warning) when it is wrong in itself. */
  private directToDevice(origin: string, raw: unknown): SendToDeviceInput | null {
    const parsed = v.safeParse(DirectToDeviceContent, raw);
    if (!parsed.success) return this.reject(origin, 'malformed');
    // NUL or lone surrogates in any key or string (sender, type, message_id, user and device
    // IDs, content): the same rule as the client API, applied to this EDU alone.
    const problem = jsonValueProblem(raw, MAX_FEDERATION_JSON_DEPTH);
    if (problem !== null) return this.reject(origin, 'bad_text', { problem });
    const edu = parsed.output;
    const sender = parseUserId(edu.sender, { allowEmptyLocalpart: true });
    if (sender === null || sender.serverName !== origin) {
      // Synapse only logs this; accepting it would let any server speak for any user.
      return this.reject(origin, 'spoofed_sender', { sender: edu.sender });
    }
    if ([...edu.message_id].length > 32) return this.reject(origin, 'message_id_too_long');
    return {
      sender: edu.sender,
      senderDevice: null,
      type: edu.type,
      origin: 'federation',
      messages: edu.messages,
      inboundMessage: { origin, messageId: edu.message_id },
      localOnly: true,
    };
  }

  /** How to apply a device-list EDU, or null (and a warning) when it is wrong in itself. */
  private deviceListEdu(origin: string, type: 'm.device_list_update' | 'm.signing_key_update', raw: unknown, to: DeviceListUpdates): (() => Promise<void>) | null {
    const problem = jsonValueProblem(raw, MAX_FEDERATION_JSON_DEPTH);
    if (problem !== null) return this.reject(origin, 'bad_text', { type, problem });
    if (type === 'm.device_list_update') {
      const parsed = v.safeParse(DeviceListUpdateContent, raw);
      if (!parsed.success) return this.reject(origin, 'malformed', { type });
      if (parseUserId(parsed.output.user_id)?.serverName !== origin) return this.reject(origin, 'spoofed_sender', { type, user: parsed.output.user_id });
      const content = parsed.output;
      return () => to.applyDeviceListUpdate(content);
    }
    const parsed = v.safeParse(SigningKeyUpdateContent, raw);
    if (!parsed.success) return this.reject(origin, 'malformed', { type });
    if (parseUserId(parsed.output.user_id)?.serverName !== origin) return this.reject(origin, 'spoofed_sender', { type, user: parsed.output.user_id });
    const content = parsed.output;
    return () => to.applySigningKeyUpdate(content);
  }

  private reject(origin: string, reason: string, fields: Record<string, unknown> = {}): null {
    this.counters.inc(REJECTED, { reason });
    this.log.warn('rejected EDU', { origin, reason, ...fields });
    return null;
  }
}

/** A PDU's event ID when it carries one; otherwise a stable hash of it to key the error by. */
function eventIdOf(pdu: unknown): string {
  const id = (pdu as { event_id?: unknown } | null)?.event_id;
  if (typeof id === 'string') return id;
  let text: string;
  try {
    text = canonicalJson(pdu);
  } catch {
    text = JSON.stringify(pdu) ?? 'null';
  }
  return `$${createHash('sha256').update(text).digest('base64url')}`;
}
