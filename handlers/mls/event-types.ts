/**
 * The module's event types, in two families. MSC4244 names `m.mls.message` (client → DS) and
 * `m.mls.commit` / `m.mls.rejected` (DS → clients) and has no unstable prefix yet, so both the
 * stable names and the same names under `org.matrix.msc4244.` are taken. A client is answered in
 * the family it wrote in; a group's fan-out goes out in the family it was created in. README.md
 * documents every shape.
 */
export type Family = 'm' | 'org.matrix.msc4244';

export const STABLE: Family = 'm';
export const UNSTABLE: Family = 'org.matrix.msc4244';

/** `<family>.mls.<name>`, e.g. `m.mls.commit` or `org.matrix.msc4244.mls.commit`. */
export const mlsType = (family: Family, name: 'message' | 'commit' | 'rejected' | 'welcome' | 'relay'): string => `${family}.mls.${name}`;

/** The family of an event type of this module. */
export const familyOf = (type: string): Family => (type.startsWith(`${UNSTABLE}.`) ? UNSTABLE : STABLE);

/** Client → server user. */
export const MLS_MESSAGE = mlsType(STABLE, 'message');
export const MLS_MESSAGE_UNSTABLE = mlsType(UNSTABLE, 'message');

/**
 * The to-device KeyPackage directory this module had before MSC4244 put KeyPackages in the keys
 * API. Its requests are answered `key_packages.error` `M_UNRECOGNIZED`, naming the endpoints.
 */
export const RETIRED_DIRECTORY = [`${UNSTABLE}.key_packages.upload`, `${UNSTABLE}.key_packages.claim`, `${UNSTABLE}.key_packages.count`] as const;
export const KEY_PACKAGES_ERROR = `${UNSTABLE}.key_packages.error`;
