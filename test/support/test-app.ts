import { createApp, type App } from '../../src/app.ts';
import { parseConfig } from '../../src/config/config.ts';
import type { Database } from '../../src/storage/drivers/database.ts';
import type { HandlerModule } from '../../src/sdk/define-handler.ts';
import type { HandlerToLoad } from '../../src/server-user/dispatcher.ts';
import ping from '../../handlers/ping/index.ts';
import type { AppserviceRegistry } from '../../src/appservice/registration.ts';
import type { Clock } from '../../src/sdk/clock.ts';
import { loadOwnSigningKey } from '../../src/federation/own-signing-key.ts';
import { createTestDatabase } from './test-database.ts';

export const SERVER_NAME = 'test.local';

export interface TestApp extends App {
  database: Database;
  close(): Promise<void>;
}

/** A whole server on a fresh database (or `extra.database`, closed with it), driven through `app.request()`. */
export async function startTestApp(
  config: Record<string, unknown> = {},
  handlers: readonly HandlerToLoad[] = [{ module: ping as HandlerModule<unknown> }],
  extra: { federationCa?: string; appservices?: AppserviceRegistry; clock?: Clock; database?: Database } = {},
): Promise<TestApp> {
  const { database: given, ...rest } = extra;
  const database = given ?? (await createTestDatabase());
  let built: App;
  try {
    built = createApp({
      config: parseConfig({ server_name: SERVER_NAME, ...config }),
      database,
      handlers,
      signingKey: await loadOwnSigningKey(database.db),
      ...rest,
    });
  } catch (e) {
    await database.close();
    throw e;
  }
  await built.start();
  return {
    ...built,
    database,
    close: async () => {
      await built.stop();
      await database.close();
    },
  };
}
