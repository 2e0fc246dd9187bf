import * as v from 'valibot';
import { defineHandler } from '../../src/sdk/index.ts';

/**
 * The smallest useful handler: answers `org.example.ping {nonce}` with
 * `org.example.pong {nonce, server_ts}` to the device that asked. Clients use it to measure the
 * round trip through the server user and to check that MSC4246 dispatch is live. Over
 * federation the EDU does not name the sending device, so a remote client may say which of its
 * devices should get the pong in `device_id`; without it the pong goes to all its devices.
 */
export default defineHandler({
  name: 'ping',
  events: {
    'org.example.ping': {
      schema: v.object({
        nonce: v.pipe(v.string(), v.maxLength(256)),
        device_id: v.optional(v.pipe(v.string(), v.minLength(1), v.maxLength(255))),
      }),
      async handle(event, ctx) {
        const { nonce, device_id: deviceId } = event.content;
        await ctx.reply('org.example.pong', { nonce, server_ts: ctx.clock.now() }, deviceId === undefined ? {} : { deviceId });
      },
    },
  },
});
