import type * as v from 'valibot';
import type { ModuleContext } from './define-handler.ts';

/** A JSON value a module keeps beside each key it accepted (e.g. what its claim matcher reads). */
export type KeyMetadata = null | boolean | number | string | KeyMetadata[] | { [key: string]: KeyMetadata };

/** One key of an upload (`one_time_keys` or `fallback_keys` of `POST /keys/upload`), before it is stored. */
export interface UploadedKey {
  userId: string;
  deviceId: string;
  /** The part after `<algorithm>:` in the key's id. */
  keyId: string;
  /** The key's JSON value as the client sent it (a string, or an object). */
  key: unknown;
  /** True for a key of `fallback_keys`. */
  fallback: boolean;
}

/**
 * What a validator says of one key. A refusal refuses the whole upload (400 with `errcode`,
 * `M_INVALID_PARAM` unless given) and nothing of it is stored; `metadata` is stored with an
 * accepted key and handed to the claim matcher.
 */
export type KeyVerdict = { ok: true; metadata?: KeyMetadata } | { ok: false; error: string; errcode?: 'M_INVALID_PARAM' | 'M_BAD_JSON' };

/** A stored key as a claim matcher sees it. */
export interface StoredKeyView {
  keyId: string;
  key: unknown;
  /** What the validator returned when the key was uploaded (null without one). */
  metadata: KeyMetadata;
}

/**
 * A one-time-key algorithm a module contributes to `/keys/upload` and `/keys/claim` (e.g. MSC4244's
 * `mls` KeyPackages). Keys of it are stored, counted (`one_time_key_counts`, `/sync`) and claimed
 * by the core like any other; the module adds what the core cannot know:
 *
 * - `validate`: each uploaded one-time or fallback key of this algorithm. One refusal refuses the
 *   upload. Without it keys are stored unchecked, as for an algorithm nobody contributed.
 * - `claim`: parameters a `/keys/claim` body may carry in a top-level field named like the
 *   algorithm (MSC4244's `mls` object), and which stored key satisfies them. A device whose keys
 *   of this algorithm (and fallback key) all fail `matches` gives no key. The same field is taken
 *   on `/_matrix/federation/v1/user/keys/claim`, and forwarded to other servers when our clients
 *   claim their users' keys. A claim without the field takes any key, in the plain way.
 */
export interface OneTimeKeyAlgorithm<Config = unknown, State = unknown, Params = unknown, Schema extends Record<string, unknown> = Record<string, never>> {
  /** The algorithm part of key ids (`mls` in `mls:<key_id>`): lower-case letters, digits, `.`, `_`, `-`. */
  name: string;
  validate?: (key: UploadedKey, ctx: ModuleContext<Config, State, Schema>) => KeyVerdict | Promise<KeyVerdict>;
  claim?: {
    /** Validates the body's field; a failure answers the claim 400 M_BAD_JSON and claims nothing. */
    schema: v.GenericSchema<unknown, Params>;
    /** Checked once per claim, before any key is taken: a refusal answers 400 M_INVALID_PARAM. */
    check?: (params: Params) => string | null;
    /** Whether this stored key satisfies the claim. Must be quick and do no I/O: it runs once per stored key per claim. */
    matches: (params: Params, key: StoredKeyView) => boolean;
  };
}
