import type * as v from 'valibot';
import type { HandlerContext, ServerUserEvent } from '../../src/sdk/index.ts';
import type { FrankingConfig } from './config.ts';
import type { listReportsContent, rotateKeyContent } from './content-schemas.ts';
import { ERROR, PUBLIC_KEYS, REPORTS } from './event-types.ts';
import { publicKeysJson, withRequestId } from './frank-handler.ts';
import { ReportStore } from './report-store.ts';
import { reportsPage } from './reports-page.ts';
import type { FrankingState } from './state.ts';

type Ctx = HandlerContext<FrankingConfig, FrankingState>;

/**
 * Moderator requests are authenticated like any to-device message (the sender's access token);
 * only local clients count — a remote server could name any of its users, so moderation over
 * federation is refused.
 */
async function isModerator(event: ServerUserEvent<{ request_id?: string | undefined }>, ctx: Ctx): Promise<boolean> {
  if (event.origin !== 'federation' && ctx.config.moderators.includes(event.sender)) return true;
  ctx.log.warn('franking moderation refused', { sender: event.sender, type: event.type });
  await ctx.reply(ERROR, { ...withRequestId(event.content.request_id), errcode: 'M_FORBIDDEN', error: 'Only moderators can do this' });
  return false;
}

/** `…list_reports`: verified reports after `since`, oldest first, at most `limit` (also `GET …/reports`, see routes.ts). */
export async function handleListReports(event: ServerUserEvent<v.InferOutput<typeof listReportsContent>>, ctx: Ctx): Promise<void> {
  if (!(await isModerator(event, ctx))) return;
  const { since, limit, request_id: requestId } = event.content;
  await ctx.reply(REPORTS, { ...withRequestId(requestId), ...(await reportsPage(new ReportStore(ctx.db), since, limit)) });
}

/** `…rotate_key`: a new current franking key; franks made with older keys stay verifiable. */
export async function handleRotateKey(event: ServerUserEvent<v.InferOutput<typeof rotateKeyContent>>, ctx: Ctx): Promise<void> {
  if (!(await isModerator(event, ctx))) return;
  const store = ctx.state.keys;
  const key = await store.rotate();
  ctx.log.info('franking key rotated', { version: key.version, by: event.sender });
  await ctx.reply(PUBLIC_KEYS, { ...withRequestId(event.content.request_id), ...(await publicKeysJson(store)) });
}
