import type * as v from 'valibot';
import { decodeBase64, encodeBase64, type HandlerContext, type ServerUserEvent, signBytes } from '../../src/sdk/index.ts';
import type { FrankingConfig } from './config.ts';
import type { frankContent, keysContent } from './content-schemas.ts';
import { ERROR, FRANKED, PUBLIC_KEYS } from './event-types.ts';
import { serverFrank, signedFrankBytes, TAG_BYTES } from './frank.ts';
import type { FrankingState } from './state.ts';

type Ctx = HandlerContext<FrankingConfig, FrankingState>;
export const withRequestId = (requestId: string | undefined) => (requestId === undefined ? {} : { request_id: requestId });

/**
 * `…frank`: the server vouches that this sender sent a message with this franking tag in this
 * context at this time. It never sees the message itself.
 */
export async function handleFrank(event: ServerUserEvent<v.InferOutput<typeof frankContent>>, ctx: Ctx): Promise<void> {
  const { franking_tag: tagText, context, request_id: requestId } = event.content;
  const tag = decodeBase64(tagText);
  if (tag === null || tag.length !== TAG_BYTES) {
    await ctx.reply(ERROR, { ...withRequestId(requestId), errcode: 'M_INVALID_PARAM', error: 'franking_tag must be 32 bytes (HMAC-SHA256)' });
    return;
  }
  const key = await ctx.state.keys.current();
  const fields = { frankingTag: tag, context, acceptedTs: ctx.clock.now(), sender: event.sender };
  const frank = serverFrank(key.hmacKey, fields);
  await ctx.reply(FRANKED, {
    ...withRequestId(requestId),
    franking_tag: encodeBase64(tag),
    context,
    sender: event.sender,
    accepted_ts: fields.acceptedTs,
    key_version: key.version,
    server_frank: encodeBase64(frank),
    signature: encodeBase64(signBytes(key.signing, signedFrankBytes(key.version, fields, frank))),
  });
}

/** `…keys`: the published Ed25519 public keys, every version, so old franks stay verifiable. */
export async function handleKeys(event: ServerUserEvent<v.InferOutput<typeof keysContent>>, ctx: Ctx): Promise<void> {
  await ctx.reply(PUBLIC_KEYS, { ...withRequestId(event.content.request_id), ...(await publicKeysJson(ctx.state.keys)) });
}

export async function publicKeysJson(store: FrankingState['keys']): Promise<Record<string, unknown>> {
  const keys = await store.all();
  return {
    current_version: keys.at(-1)?.version ?? null,
    keys: keys.map((k) => ({ version: k.version, public_key: encodeBase64(k.signing.publicKey), created_ts: k.createdTs, retired_ts: k.retiredTs })),
  };
}
