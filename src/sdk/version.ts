/**
 * The version of this SDK (semver), which is the package's own version: a module declares the
 * range it was written for in `defineHandler({ sdk: '^1.0.0' })` and a server whose SDK is
 * outside it refuses the module at start (`TDS_ERR_SDK_VERSION`). What counts as a breaking
 * change is in docs/modules.md, "Versioning".
 *
 * @since 1.0.0
 */
export const SDK_VERSION = '1.0.0';
