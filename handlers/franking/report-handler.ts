import { decodeBase64, encodeBase64, type HandlerContext, type ServerUserEvent } from '../../src/sdk/index.ts';
import type { FrankingConfig } from './config.ts';
import type { ReportContent } from './content-schemas.ts';
import { VERDICT } from './event-types.ts';
import { frankingTag, macEquals, serverFrank, TAG_BYTES } from './frank.ts';
import { withRequestId } from './frank-handler.ts';
import { ReportStore } from './report-store.ts';
import type { FrankingState } from './state.ts';

type RejectReason = 'malformed' | 'not_recipient' | 'unknown_key_version' | 'franking_tag_mismatch' | 'frank_mismatch';

const ERRORS: Record<RejectReason, string> = {
  malformed: 'franking_key, franking_tag or server_frank is not the right length',
  not_recipient: 'Only the recipient named in the context can report this message',
  unknown_key_version: 'No franking key has this version',
  franking_tag_mismatch: 'The message and franking key do not produce this franking tag',
  frank_mismatch: 'The server did not frank this message for this sender, context and time',
};

/**
 * `…report`: a recipient reveals the plaintext and franking key. The server recomputes the
 * franking tag from them, then its own frank over (tag, context, accepted_ts, sender); only if
 * both MACs match does it store the report — so a report can name neither a message the sender
 * did not send nor a sender who did not send it.
 */
export async function handleReport(event: ServerUserEvent<ReportContent>, ctx: HandlerContext<FrankingConfig, FrankingState>): Promise<void> {
  const c = event.content;
  const reject = async (reason: RejectReason): Promise<void> => {
    ctx.log.info('franking report rejected', { reporter: event.sender, reason });
    await ctx.reply(VERDICT, { ...withRequestId(c.request_id), verdict: 'rejected', reason, error: ERRORS[reason] });
  };

  const frankingKey = decodeBase64(c.franking_key);
  const claimedFrank = decodeBase64(c.server_frank);
  const claimedTag = c.franking_tag === undefined ? null : decodeBase64(c.franking_tag);
  if (frankingKey === null || frankingKey.length === 0 || claimedFrank === null || (c.franking_tag !== undefined && (claimedTag === null || claimedTag.length !== TAG_BYTES))) {
    return reject('malformed');
  }
  // A message sent to one user can only be reported by that user; a room context is trusted to
  // the client (this server has no rooms to check membership against).
  if (c.context.startsWith('@') && c.context !== event.sender) return reject('not_recipient');
  const key = await ctx.state.keys.byVersion(c.key_version);
  if (key === null) return reject('unknown_key_version');

  const tag = frankingTag(frankingKey, Buffer.from(c.message, 'utf8'));
  if (claimedTag !== null && !macEquals(tag, claimedTag)) return reject('franking_tag_mismatch');
  const expected = serverFrank(key.hmacKey, { frankingTag: tag, context: c.context, acceptedTs: c.accepted_ts, sender: c.sender });
  if (!macEquals(expected, claimedFrank)) return reject('frank_mismatch');

  const reportId = await new ReportStore(ctx.db).add({
    reporterUserId: event.sender,
    reporterDeviceId: event.senderDevice,
    sender: c.sender,
    context: c.context,
    acceptedTs: c.accepted_ts,
    keyVersion: c.key_version,
    // Re-encoded, not as sent: base64 has several spellings of one value, and a report is stored once per frank.
    serverFrank: encodeBase64(claimedFrank),
    message: c.message,
    reason: c.reason ?? null,
    createdTs: ctx.clock.now(),
  });
  ctx.log.info('franking report verified', { reporter: event.sender, reportId });
  await ctx.reply(VERDICT, { ...withRequestId(c.request_id), verdict: 'verified', report_id: reportId });
}
