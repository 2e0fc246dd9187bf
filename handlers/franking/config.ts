import * as v from 'valibot';

/** The module's block of the server config: `handlers: [{module: franking, config: {…}}]`. */
export const frankingConfig = v.strictObject({
  /** User IDs allowed to list reports and rotate the server's franking key. */
  moderators: v.optional(v.array(v.pipe(v.string(), v.regex(/^@[^:]*:.+$/, 'not a user ID'))), []),
});

export type FrankingConfig = v.InferOutput<typeof frankingConfig>;
