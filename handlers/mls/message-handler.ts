import { createHash } from 'node:crypto';
import { canonicalJsonByteLength, type HandlerContext, MAX_CONTENT_BYTES, parseUserId, type ServerUserEvent } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';
import type { MlsMessageContent } from './content-schemas.ts';
import { familyOf, mlsType } from './event-types.ts';
import { GroupStore, type DeviceRef } from './group-store.ts';
import { mlsWire } from './lazy.ts';

type Ctx = HandlerContext<MlsConfig, undefined>;

type RejectReason =
  | 'wrong_epoch'
  | 'not_member'
  | 'unknown_group'
  | 'invalid_message'
  | 'invalid_welcome'
  | 'missing_welcome'
  | 'invalid_commit_info'
  | 'too_large'
  | 'unknown_device';

const ERRORS: Record<RejectReason, string> = {
  wrong_epoch: 'The group is at another epoch; apply the commits you missed and try again',
  not_member: 'The sending device is not a member of this group',
  unknown_group: 'The delivery service does not know this group',
  invalid_message: 'message is not an MLS PublicMessage or PrivateMessage this service can deliver',
  invalid_welcome: 'commit_info.welcome is not an MLSMessage carrying a Welcome',
  missing_welcome: 'A commit that adds devices needs commit_info.welcome',
  invalid_commit_info: 'commit_info.added and removed must name devices of valid user IDs (not a server user)',
  too_large: 'The message would not fit in a to-device message to the other members (64 KiB) once framed by the service',
  unknown_device: 'The sending device is unknown; over federation, name it in device_id',
};

const deviceJson = (d: DeviceRef) => ({ user_id: d.userId, device_id: d.deviceId });
// Devices must be real users' devices: a server user (`@:domain`) cannot be an MLS member, and
// sending it the Welcome after acceptance would fail, leaving the committer unconfirmed.
const isMemberUserId = (userId: string) => parseUserId(userId) !== null;
// What the service sends is the client's content plus framing; checked before anything is
// accepted, so a send can never fail halfway through a fan-out for being too large.
const fits = (content: Record<string, unknown>) => canonicalJsonByteLength(content) <= MAX_CONTENT_BYTES;

/**
 * `…mls.message`: the RFC 9420 delivery service. Commits are ordered (exactly one per epoch,
 * decided by the database), application messages and proposals for the current epoch are
 * relayed to the other member devices, and Welcomes are released only once their commit won.
 */
export async function handleMlsMessage(event: ServerUserEvent<MlsMessageContent>, ctx: Ctx): Promise<void> {
  const { content } = event;
  // Over federation the origin server vouches for the user; the member device is named in the content.
  const deviceId = event.senderDevice ?? content.device_id ?? null;
  const requestId = content.request_id === undefined ? {} : { request_id: content.request_id };
  // Answers go out in the family the client wrote in (m.mls.* or org.matrix.msc4244.mls.*).
  const family = familyOf(event.type);

  const reject = async (reason: RejectReason, groupId: string | null, epoch: number | null): Promise<void> => {
    ctx.log.debug('mls message rejected', { sender: event.sender, reason });
    const to = deviceId ?? '*';
    await ctx.send(mlsType(family, 'rejected'), { ...requestId, group_id: groupId, epoch, reason, error: ERRORS[reason] }, { userId: event.sender, deviceId: to });
  };

  const { decodeMlsMessageBase64, framedMessageInfo } = await mlsWire();
  const decoded = decodeMlsMessageBase64(content.message);
  const info = decoded === null ? null : framedMessageInfo(decoded.message);
  if (decoded === null || info === null) return reject('invalid_message', null, null);
  if (deviceId === null) return reject('unknown_device', info.groupId, null);
  const sender: DeviceRef = { userId: event.sender, deviceId };
  const groups = new GroupStore(ctx.db);

  if (info.contentType !== 'commit') {
    // RFC 9420 §6: application data is only ever sent as a PrivateMessage.
    if (info.contentType === 'application' && info.wireformat !== 'mls_private_message') return reject('invalid_message', info.groupId, null);
    const relay = { group_id: info.groupId, epoch: info.epoch, message: content.message, sender: deviceJson(sender) };
    if (!fits(relay)) return reject('too_large', info.groupId, null);
    const check = await groups.checkMember(info.groupId, info.epoch, sender);
    if (check.kind === 'rejected') return reject(check.reason, info.groupId, check.epoch);
    for (const to of check.recipients) await ctx.send(mlsType(check.family, 'relay'), relay, to);
    return;
  }

  const commitInfo = content.commit_info ?? { added: [], removed: [] };
  const added = commitInfo.added.map((d) => ({ userId: d.user_id, deviceId: d.device_id }));
  const removed = commitInfo.removed.map((d) => ({ userId: d.user_id, deviceId: d.device_id }));
  if (commitInfo.welcome !== undefined) {
    const welcome = decodeMlsMessageBase64(commitInfo.welcome);
    if (welcome === null || welcome.message.wireformat !== 'mls_welcome') return reject('invalid_welcome', info.groupId, null);
  }
  if (added.length > 0 && commitInfo.welcome === undefined) return reject('missing_welcome', info.groupId, null);
  if (![...added, ...removed].every((d) => isMemberUserId(d.userId))) return reject('invalid_commit_info', info.groupId, null);

  // An accepted commit always moves its epoch to the next one, so the events can be built (and
  // their size checked) before the decision.
  const nextEpoch = info.epoch + 1;
  const commitEvent: Record<string, unknown> = {
    group_id: info.groupId,
    epoch: nextEpoch,
    message: content.message,
    sender: deviceJson(sender),
    added: commitInfo.added,
    removed: commitInfo.removed,
  };
  const welcomeEvent =
    commitInfo.welcome === undefined
      ? null
      : {
          group_id: info.groupId,
          epoch: nextEpoch,
          welcome: commitInfo.welcome,
          ...(commitInfo.ratchet_tree === undefined ? {} : { ratchet_tree: commitInfo.ratchet_tree }),
          sender: deviceJson(sender),
        };
  // The committer's copy also carries its request_id (and `duplicate` on a retry): the largest.
  if (!fits({ ...commitEvent, ...requestId, duplicate: true }) || (welcomeEvent !== null && !fits(welcomeEvent))) return reject('too_large', info.groupId, null);

  const outcome = await groups.tryCommit({
    groupId: info.groupId,
    epoch: info.epoch,
    committer: sender,
    family,
    commitSha256: createHash('sha256').update(decoded.bytes).digest('base64'),
    added,
    removed,
  }, ctx.clock.now());
  if (outcome.kind === 'rejected') return reject(outcome.reason, info.groupId, outcome.epoch);
  // MSC4244: an accepted commit goes as `m.mls.commit` to the group's joined devices, the
  // committer included: its copy (with its request_id) is how it learns it won.
  if (outcome.kind === 'duplicate') {
    // A retry after a lost answer: the committer alone is told again, nobody gets a second fan-out.
    await ctx.send(mlsType(family, 'commit'), { ...commitEvent, epoch: outcome.epoch, ...requestId, duplicate: true }, sender);
    return;
  }

  ctx.log.info('mls commit accepted', { group: info.groupId, epoch: outcome.epoch, created: outcome.created });
  // Existing members (including those this commit removes: they learn of it from the commit).
  for (const to of outcome.recipients) {
    if (added.some((a) => a.userId === to.userId && a.deviceId === to.deviceId)) continue;
    await ctx.send(mlsType(outcome.family, 'commit'), commitEvent, to);
  }
  // RFC 9420 §14: a Welcome goes out only once the DS has accepted its commit, so a losing
  // commit can never leave a device joined to an epoch the group never reached.
  if (welcomeEvent !== null) {
    for (const to of added) await ctx.send(mlsType(outcome.family, 'welcome'), welcomeEvent, to);
  }
  await ctx.send(mlsType(family, 'commit'), { ...commitEvent, ...requestId }, sender);
}
