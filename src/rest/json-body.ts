import type { Context } from 'hono';
import * as v from 'valibot';
import { MatrixError } from '../errors/matrix-error.ts';
import { jsonTextProblem, MAX_CLIENT_JSON_DEPTH, MAX_FEDERATION_JSON_DEPTH, type JsonTextRules } from '../matrix/input-checks.ts';

const CLIENT_RULES: JsonTextRules = { maxDepth: MAX_CLIENT_JSON_DEPTH, unicode: true, integersOnly: true };
// A federation transaction carries many senders' EDUs: one bad EDU must not fail the others, so
// text and numbers are checked per EDU (FederationInbound); here only the nesting that would
// overflow the stack.
const FEDERATION_RULES: JsonTextRules = { maxDepth: MAX_FEDERATION_JSON_DEPTH, unicode: false, integersOnly: false };

/**
 * Reads a request body as Matrix wants it: over the size cap → 413 M_TOO_LARGE, not JSON →
 * M_NOT_JSON, not an object or the wrong shape → M_BAD_JSON, a required key missing →
 * M_MISSING_PARAM. Hono's own validators skip bodies without Content-Type and answer
 * non-Matrix errors, so we parse the text ourselves. Hostile text (NUL, lone surrogates, deep
 * nesting, non-integer numbers: see input-checks.ts) → M_BAD_JSON, before anything is done.
 */
export async function readJsonBody<S extends v.GenericSchema>(
  c: Context,
  schema: S,
  maxBytes: number,
  opts: { optional?: boolean } = {},
): Promise<v.InferOutput<S>> {
  const declared = Number(c.req.header('content-length') ?? NaN);
  if (declared > maxBytes) throw tooLarge(maxBytes);
  const text = await c.req.text();
  if (Buffer.byteLength(text, 'utf8') > maxBytes) throw tooLarge(maxBytes);
  let value: unknown;
  if (text.trim() === '' && opts.optional === true) {
    value = {};
  } else {
    try {
      value = JSON.parse(text);
    } catch {
      throw new MatrixError('M_NOT_JSON', 'Content not JSON.');
    }
    const problem = jsonTextProblem(text, c.req.path.startsWith('/_matrix/federation/') ? FEDERATION_RULES : CLIENT_RULES);
    if (problem !== null) throw new MatrixError('M_BAD_JSON', `The body ${problem}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MatrixError('M_BAD_JSON', 'The body must be a JSON object');
  }
  const parsed = v.safeParse(schema, value);
  if (parsed.success) return parsed.output;
  throw issuesToError(parsed.issues);
}

function tooLarge(maxBytes: number): MatrixError {
  return new MatrixError('M_TOO_LARGE', `Request body is larger than ${maxBytes} bytes`);
}

export function issuesToError(issues: readonly v.BaseIssue<unknown>[]): MatrixError {
  const first = issues[0];
  const path = first?.path?.map((p) => String(p.key)).join('.') ?? '';
  // A missing key shows up as an issue whose input is undefined at that path.
  if (first !== undefined && first.input === undefined && first.path !== undefined) {
    return new MatrixError('M_MISSING_PARAM', `Missing parameter: ${path}`);
  }
  return new MatrixError('M_BAD_JSON', path === '' ? (first?.message ?? 'Bad JSON') : `${path}: ${first?.message ?? 'invalid'}`);
}

/** A JSON object mapping strings to `value` (valibot's record alone also lets arrays through). */
export function jsonObjectOf<S extends v.GenericSchema>(value: S, message: string) {
  return v.pipe(
    v.custom<Record<string, unknown>>((o) => typeof o === 'object' && o !== null && !Array.isArray(o), message),
    v.record(v.string(), value, message),
  );
}
