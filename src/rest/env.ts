import type { Session } from '../services/accounts.ts';

/** Hono environment of every route: what the middlewares put on the context. */
export interface AppEnv {
  Variables: {
    session: Session;
    requestId: string;
  };
}
