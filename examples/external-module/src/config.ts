import * as v from 'valibot';

/** This module's block of the server config: `handlers: [{module: matrix-to-device-counter, config: {…}}]`. */
export const counterConfig = v.strictObject({
  /** Longest counter name accepted. */
  max_name_length: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.maxValue(255)), 64),
});

export type CounterConfig = v.InferOutput<typeof counterConfig>;
