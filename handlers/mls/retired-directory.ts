import * as v from 'valibot';
import { handlersFor } from '../../src/sdk/index.ts';
import type { MlsConfig } from './config.ts';
import { KEY_PACKAGES_ERROR } from './event-types.ts';

const anyRequest = v.object({ request_id: v.optional(v.pipe(v.string(), v.maxLength(128))) });

/**
 * `org.matrix.msc4244.key_packages.upload|claim|count`: the to-device directory is gone (its
 * packages now are `mls:` one-time keys, MSC4244), so an old client is told where they went
 * rather than left waiting for a reply that never comes.
 */
export const handleRetiredDirectory = handlersFor<MlsConfig>()(anyRequest, async (event, ctx) => {
  await ctx.reply(KEY_PACKAGES_ERROR, {
    ...(event.content.request_id === undefined ? {} : { request_id: event.content.request_id }),
    errcode: 'M_UNRECOGNIZED',
    error: 'KeyPackages are one-time keys now (MSC4244): upload them as one_time_keys "mls:<key_id>" with POST /_matrix/client/v3/keys/upload, claim them with POST /_matrix/client/v3/keys/claim',
  });
});
