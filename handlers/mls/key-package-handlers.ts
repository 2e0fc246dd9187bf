import type * as v from 'valibot';
import type { HandlerContext, ServerUserEvent } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';
import type { claimContent, countContent, uploadContent } from './content-schemas.ts';
import { KEY_PACKAGES_CLAIMED, KEY_PACKAGES_COUNTED, KEY_PACKAGES_ERROR, KEY_PACKAGES_UPLOADED } from './event-types.ts';
import { KeyPackageStore, type StoredKeyPackage } from './key-package-store.ts';
import { keyPackageValidation } from './lazy.ts';
import type { MlsState } from './state.ts';
import type { KeyPackageProblem } from './validate-key-package.ts';

type Ctx = HandlerContext<MlsConfig, MlsState>;
const withRequestId = (requestId: string | undefined) => (requestId === undefined ? {} : { request_id: requestId });

/**
 * The device a directory request speaks for. Uploads and counts are about the sending device,
 * which the server knows only for its own clients and appservices; over federation it does not.
 */
async function requireDevice(event: ServerUserEvent<{ request_id?: string | undefined }>, ctx: Ctx): Promise<string | null> {
  if (event.senderDevice !== null) return event.senderDevice;
  await ctx.reply(KEY_PACKAGES_ERROR, {
    ...withRequestId(event.content.request_id),
    errcode: 'M_FORBIDDEN',
    error: 'KeyPackages can only be uploaded and counted by a local device',
  });
  return null;
}

export async function handleUpload(event: ServerUserEvent<v.InferOutput<typeof uploadContent>>, ctx: Ctx): Promise<void> {
  const deviceId = await requireDevice(event, ctx);
  if (deviceId === null) return;
  const uploader = { userId: event.sender, deviceId };
  const { validateKeyPackage } = await keyPackageValidation();
  const store = new KeyPackageStore(ctx.db);
  const rejected: { index: number; reason: KeyPackageProblem | 'too_many' }[] = [];
  const valid: StoredKeyPackage[] = [];
  const { count: stored } = await store.count(uploader.userId, uploader.deviceId);
  for (const [index, text] of event.content.key_packages.entries()) {
    const verdict = await validateKeyPackage(text, uploader, ctx.config.ciphersuites, ctx.clock.now());
    if (!verdict.ok) rejected.push({ index, reason: verdict.problem });
    // A soft cap: two uploads racing may together exceed it by one batch, which is harmless.
    else if (stored + valid.length >= ctx.config.max_key_packages_per_device) rejected.push({ index, reason: 'too_many' });
    else valid.push({ ref: verdict.ref, ciphersuite: verdict.ciphersuite, keyPackage: text });
  }
  await store.addOneTime(uploader.userId, uploader.deviceId, valid, ctx.clock.now());
  let lastResort: { accepted: boolean; reason?: KeyPackageProblem } | undefined;
  if (event.content.last_resort !== undefined) {
    const verdict = await validateKeyPackage(event.content.last_resort, uploader, ctx.config.ciphersuites, ctx.clock.now());
    if (verdict.ok) {
      await store.setLastResort(uploader.userId, uploader.deviceId, { ref: verdict.ref, ciphersuite: verdict.ciphersuite, keyPackage: event.content.last_resort }, ctx.clock.now());
      lastResort = { accepted: true };
    } else {
      lastResort = { accepted: false, reason: verdict.problem };
    }
  }
  const now = await store.count(uploader.userId, uploader.deviceId);
  ctx.log.debug('key packages uploaded', { sender: event.sender, accepted: valid.length, rejected: rejected.length });
  await ctx.reply(KEY_PACKAGES_UPLOADED, {
    ...withRequestId(event.content.request_id),
    accepted: valid.length,
    rejected,
    ...(lastResort === undefined ? {} : { last_resort: lastResort }),
    count: now.count,
    has_last_resort: now.lastResort,
  });
}

export async function handleClaim(event: ServerUserEvent<v.InferOutput<typeof claimContent>>, ctx: Ctx): Promise<void> {
  const { user_id: target, ciphersuite = null, request_id: requestId } = event.content;
  const retryAfterMs = ctx.state.claimLimiter.take(event.sender);
  if (retryAfterMs > 0) {
    await ctx.reply(KEY_PACKAGES_ERROR, {
      ...withRequestId(requestId),
      errcode: 'M_LIMIT_EXCEEDED',
      error: 'Too many KeyPackage claims',
      retry_after_ms: retryAfterMs,
    });
    return;
  }
  const store = new KeyPackageStore(ctx.db);
  const keyPackages: Record<string, { key_package: string; last_resort: boolean }> = {};
  // Only this server's users have packages here; for anyone else the answer is simply empty.
  for (const deviceId of await store.devicesWithPackages(target, ciphersuite)) {
    const claimed = await store.claim(target, deviceId, ciphersuite);
    if (claimed !== null) keyPackages[deviceId] = { key_package: claimed.keyPackage, last_resort: claimed.lastResort };
  }
  ctx.log.debug('key packages claimed', { sender: event.sender, target, devices: Object.keys(keyPackages).length });
  await ctx.reply(KEY_PACKAGES_CLAIMED, { ...withRequestId(requestId), user_id: target, key_packages: keyPackages });
}

export async function handleCount(event: ServerUserEvent<v.InferOutput<typeof countContent>>, ctx: Ctx): Promise<void> {
  const deviceId = await requireDevice(event, ctx);
  if (deviceId === null) return;
  const counted = await new KeyPackageStore(ctx.db).count(event.sender, deviceId);
  await ctx.reply(KEY_PACKAGES_COUNTED, { ...withRequestId(event.content.request_id), count: counted.count, has_last_resort: counted.lastResort });
}
