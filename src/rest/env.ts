import type { Session } from '../services/accounts.ts';

/** What the request log knows of a request while it runs (see installRequestLog). */
export interface RequestScope {
  readonly requestId: string;
  /** Set by authentication, for the log line. */
  session: Session | undefined;
}

/** Hono environment of every route: what authentication puts on the context, and the request's scope in `c.env`. */
export interface AppEnv {
  Variables: {
    session: Session;
  };
  Bindings: {
    /** Absent only when a route set is served without installRequestLog. */
    scope?: RequestScope;
  };
}
