import { createApp, type App } from '../../src/app.ts';
import { parseConfig } from '../../src/config/config.ts';
import type { Database } from '../../src/storage/database.ts';
import { createTestDatabase } from './test-database.ts';

export const SERVER_NAME = 'test.local';

export interface TestApp extends App {
  database: Database;
  close(): Promise<void>;
}

/** A whole server on a fresh database, driven through `app.request()`. */
export async function startTestApp(config: Record<string, unknown> = {}): Promise<TestApp> {
  const database = await createTestDatabase();
  const built = createApp({ config: parseConfig({ server_name: SERVER_NAME, ...config }), database });
  return { ...built, database, close: () => database.close() };
}
