import * as v from 'valibot';
import { MatrixError } from '../errors/matrix-error.ts';
import type { LoadedModule } from '../server-user/dispatcher.ts';
import type { KeyMetadata, OneTimeKeyAlgorithm, StoredKeyView } from '../sdk/key-algorithm.ts';
import type { ModuleProblem } from '../sdk/module-errors.ts';
import { HandlerLoadError, problem } from '../server-user/module-checks.ts';
import type { ModuleContext } from '../sdk/define-handler.ts';

/** A key of an upload, split and canonicalised (see keys.ts), as the registry checks it. */
export interface KeyToCheck {
  algorithm: string;
  keyId: string;
  keyJson: string;
  fallback: boolean;
}

/** The claim parameters of one `/keys/claim` request, per algorithm that takes them. */
export interface ClaimParams {
  /** As the client sent them, to forward to other servers. */
  readonly raw: Readonly<Record<string, unknown>>;
  /** Validated, for the matchers. */
  readonly parsed: ReadonlyMap<string, unknown>;
}

export const NO_CLAIM_PARAMS: ClaimParams = { raw: {}, parsed: new Map() };

/** Decides for one stored key whether it satisfies a claim's parameters. */
export type KeyMatcher = (key: StoredKeyView) => boolean;

// Letters a key id's algorithm part has in practice; also keeps the body field it names from
// being one the claim endpoints already use.
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const RESERVED = new Set(['one_time_keys', 'timeout']);

interface Registered {
  algorithm: OneTimeKeyAlgorithm<unknown, unknown, unknown>;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  ctx: ModuleContext<unknown, unknown, any>;
  module: string;
}

/**
 * The one-time-key algorithms handler modules contribute (HandlerModule.keyAlgorithms): the core
 * stores, counts and claims every algorithm's keys alike and asks the contributing module only
 * whether an uploaded key is acceptable and which stored key satisfies a claim's parameters.
 */
export class KeyAlgorithms {
  private readonly byName = new Map<string, Registered>();

  constructor(loaded: readonly LoadedModule[] = []) {
    const problems: ModuleProblem[] = [];
    for (const { module, ctx } of loaded) {
      for (const algorithm of module.keyAlgorithms ?? []) {
        const label = `handler module "${module.name}": key algorithm "${algorithm.name}"`;
        if (!NAME.test(algorithm.name) || RESERVED.has(algorithm.name)) problems.push(problem('TDS_ERR_KEY_ALGORITHM', `${label}: a name is lower-case letters, digits, ".", "_", "-" (not ${[...RESERVED].join(' or ')})`));
        else if (this.byName.has(algorithm.name)) problems.push(problem('TDS_ERR_KEY_ALGORITHM', `${label}: already contributed by module "${this.byName.get(algorithm.name)?.module}"`));
        else this.byName.set(algorithm.name, { algorithm: algorithm as unknown as OneTimeKeyAlgorithm<unknown, unknown, unknown>, ctx, module: module.name });
      }
    }
    if (problems.length > 0) throw new HandlerLoadError(problems);
  }

  /**
   * Checks every key of an upload whose algorithm a module validates, before anything is stored.
   * Returns the metadata to store per key (null for keys without a validator); the first refused
   * key refuses the upload with a Matrix error.
   */
  async check(userId: string, deviceId: string, keys: readonly KeyToCheck[]): Promise<(string | null)[]> {
    const out: (string | null)[] = [];
    for (const k of keys) {
      const registered = this.byName.get(k.algorithm);
      if (registered?.algorithm.validate === undefined) {
        out.push(null);
        continue;
      }
      const verdict = await registered.algorithm.validate({ userId, deviceId, keyId: k.keyId, key: JSON.parse(k.keyJson) as unknown, fallback: k.fallback }, registered.ctx);
      const field = `${k.fallback ? 'fallback_keys' : 'one_time_keys'}.${k.algorithm}:${k.keyId}`;
      if (!verdict.ok) throw new MatrixError(verdict.errcode ?? 'M_INVALID_PARAM', `${field}: ${verdict.error}`);
      out.push(verdict.metadata === undefined ? null : JSON.stringify(verdict.metadata));
    }
    return out;
  }

  /**
   * The claim parameters in a claim body: the top-level field of each algorithm that takes them.
   * Invalid parameters refuse the claim (nothing is taken).
   */
  claimParams(body: Readonly<Record<string, unknown>>): ClaimParams {
    const raw: Record<string, unknown> = {};
    const parsed = new Map<string, unknown>();
    for (const [name, { algorithm }] of this.byName) {
      const value = body[name];
      if (value === undefined || algorithm.claim === undefined) continue;
      const result = v.safeParse(algorithm.claim.schema, value);
      if (!result.success) throw new MatrixError('M_BAD_JSON', `${name}: ${result.issues[0].message}`);
      const problem = algorithm.claim.check?.(result.output) ?? null;
      if (problem !== null) throw new MatrixError('M_INVALID_PARAM', `${name}: ${problem}`);
      raw[name] = value;
      parsed.set(name, result.output);
    }
    return { raw, parsed };
  }

  /** The matcher for claims of `algorithm` under `params`, or null when the plain claim applies. */
  matcher(algorithm: string, params: ClaimParams): KeyMatcher | null {
    const claim = this.byName.get(algorithm)?.algorithm.claim;
    if (claim === undefined || !params.parsed.has(algorithm)) return null;
    const p = params.parsed.get(algorithm);
    return (key) => {
      try {
        return claim.matches(p, key);
      } catch {
        // A matcher that throws on odd stored data just does not match it.
        return false;
      }
    };
  }
}

/** Stored metadata as the matcher gets it. */
export function metadataOf(json: string | null): KeyMetadata {
  return json === null ? null : (JSON.parse(json) as KeyMetadata);
}
