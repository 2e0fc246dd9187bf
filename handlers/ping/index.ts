import * as v from 'valibot';
import { defineHandler } from '../../src/sdk/index.ts';

/**
 * The smallest useful handler: answers `org.example.ping {nonce}` with
 * `org.example.pong {nonce, server_ts}` to the device that asked. Clients use it to measure the
 * round trip through the server user and to check that MSC4246 dispatch is live.
 */
export default defineHandler({
  name: 'ping',
  events: {
    'org.example.ping': {
      schema: v.object({ nonce: v.pipe(v.string(), v.maxLength(256)) }),
      async handle(event, ctx) {
        await ctx.reply('org.example.pong', { nonce: event.content.nonce, server_ts: Date.now() });
      },
    },
  },
});
