/**
 * The module's event types. No MSC fixes these shapes yet (MSC4244 leaves `m.mls.commit` and
 * `m.mls.rejected` as TODO), so they live under MSC4244's unstable prefix; README.md documents
 * every one.
 */
const PREFIX = 'org.matrix.msc4244';

/** Client → server user. */
export const KEY_PACKAGES_UPLOAD = `${PREFIX}.key_packages.upload`;
export const KEY_PACKAGES_CLAIM = `${PREFIX}.key_packages.claim`;
export const KEY_PACKAGES_COUNT = `${PREFIX}.key_packages.count`;
export const MLS_MESSAGE = `${PREFIX}.mls.message`;

/** Server user → client. */
export const KEY_PACKAGES_UPLOADED = `${PREFIX}.key_packages.uploaded`;
export const KEY_PACKAGES_CLAIMED = `${PREFIX}.key_packages.claimed`;
export const KEY_PACKAGES_COUNTED = `${PREFIX}.key_packages.counted`;
export const KEY_PACKAGES_ERROR = `${PREFIX}.key_packages.error`;
export const MLS_ACCEPTED = `${PREFIX}.mls.accepted`;
export const MLS_REJECTED = `${PREFIX}.mls.rejected`;
export const MLS_COMMIT = `${PREFIX}.mls.commit`;
export const MLS_WELCOME = `${PREFIX}.mls.welcome`;
export const MLS_RELAY = `${PREFIX}.mls.relay`;
