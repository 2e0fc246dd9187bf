import { defineHandler } from '../../src/server-user/define-handler.ts';
import { mlsConfig } from './config.ts';
import { claimContent, countContent, mlsMessageContent, uploadContent } from './content-schemas.ts';
import { KEY_PACKAGES_CLAIM, KEY_PACKAGES_COUNT, KEY_PACKAGES_UPLOAD, MLS_MESSAGE } from './event-types.ts';
import { handleClaim, handleCount, handleUpload } from './key-package-handlers.ts';
import { handleMlsMessage } from './message-handler.ts';
import { mlsGroupMembers, mlsGroups, mlsKeyPackages } from './schema.ts';

/**
 * An RFC 9420 Delivery Service as the server user (the role MSC4244 gives it): a KeyPackage
 * directory, and commit ordering with fan-out for MLS groups. See README.md beside this file
 * for every message shape.
 */
export default defineHandler({
  name: 'mls',
  config: mlsConfig,
  tables: { mlsKeyPackages, mlsGroups, mlsGroupMembers },
  events: {
    [KEY_PACKAGES_UPLOAD]: { schema: uploadContent, handle: handleUpload },
    [KEY_PACKAGES_CLAIM]: { schema: claimContent, handle: handleClaim },
    [KEY_PACKAGES_COUNT]: { schema: countContent, handle: handleCount },
    [MLS_MESSAGE]: { schema: mlsMessageContent, handle: handleMlsMessage },
  },
});
