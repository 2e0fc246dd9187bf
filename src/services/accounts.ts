import { MatrixError } from '../errors/matrix-error.ts';
import { formatUserId, isValidNewLocalpart, parseUserId } from '../shared/user-id.ts';
import { AccountsStore, type DeviceRow } from '../storage/accounts-store.ts';
import type { Db } from '../storage/drivers/database.ts';
import { UiaStore } from '../storage/uia-store.ts';
import { hashPassword, verifyPassword } from '../crypto/passwords.ts';
import { hashToken, newAccessToken, newDeviceId, newOpaqueId } from '../crypto/tokens.ts';

export interface Session {
  userId: string;
  /** Null for an appservice acting as a user without naming a device. */
  deviceId: string | null;
  /** Set when the request was made with an appservice's as_token. */
  appserviceId?: string;
}

export interface LoginResult {
  userId: string;
  deviceId: string;
  accessToken: string;
}

/** The password stage of user-interactive auth, as sent in a request's `auth`. */
export interface PasswordAuth {
  type?: string | undefined;
  session?: string | undefined;
  identifier?: { type?: string | undefined; user?: string | undefined } | undefined;
  user?: string | undefined;
  password?: string | undefined;
}

const UIA_TTL_MS = 15 * 60 * 1000;
// Bounds how long another process may accept a revoked token if its NOTIFY was lost.
const TOKEN_CACHE_TTL_MS = 30_000;
const TOKEN_CACHE_MAX = 100_000;

/**
 * Accounts, devices and access tokens. The server user `@:<server_name>` is reserved here:
 * nobody can register it, log in as it, or keep using a token it might once have had.
 */
export class AccountsService {
  private readonly store: AccountsStore;
  private readonly uia: UiaStore;
  readonly serverUserId: string;
  /** Token hash → session: saves the lookup on every request. Revocations clear it. */
  private readonly tokenCache = new Map<string, { session: Session; expires: number }>();
  /** Counts revocations, so a lookup that raced with one does not cache its result. */
  private revocations = 0;
  /** Tells other processes about revoked tokens (PostgreSQL NOTIFY). */
  publishRevoked: (tokenHashes: string[]) => void = () => {};
  /** Told after a user's devices were deleted or renamed (the device-list stream has the change). */
  devicesChanged: (userId: string) => Promise<void> = async () => {};

  constructor(
    db: Db,
    private readonly serverName: string,
  ) {
    this.store = new AccountsStore(db);
    this.uia = new UiaStore(db);
    this.serverUserId = `@:${serverName}`;
  }

  async userExists(userId: string): Promise<boolean> {
    return (await this.store.getUser(userId)) !== null;
  }

  async deviceExists(userId: string, deviceId: string): Promise<boolean> {
    return (await this.store.getDevice(userId, deviceId)) !== null;
  }

  /** Registers a user for an appservice (no password); logs in unless inhibited. */
  async registerForAppservice(localpart: string, deviceId: string | null, inhibitLogin: boolean): Promise<{ userId: string; login: LoginResult | null }> {
    this.checkNewLocalpart(localpart);
    const userId = formatUserId(localpart, this.serverName);
    if (!(await this.store.createUser(userId, localpart, null))) throw new MatrixError('M_USER_IN_USE', 'User ID already taken');
    return { userId, login: inhibitLogin ? null : await this.startSession(userId, deviceId, null) };
  }

  /** Drops every cached token: other processes' revocations may have been missed. */
  forgetAllTokens(): void {
    this.revocations++;
    this.tokenCache.clear();
  }

  /** Drops tokens from the cache; called locally and for other processes' revocations. */
  forgetTokens(tokenHashes: readonly string[]): void {
    this.revocations++;
    for (const h of tokenHashes) this.tokenCache.delete(h);
  }

  private revoke(tokenHashes: (string | null)[]): void {
    const hashes = tokenHashes.filter((h): h is string => h !== null);
    if (hashes.length === 0) return;
    this.forgetTokens(hashes);
    this.publishRevoked(hashes);
  }

  async authenticate(token: string): Promise<Session> {
    const hash = hashToken(token);
    const now = Date.now();
    const cached = this.tokenCache.get(hash);
    if (cached !== undefined && cached.expires > now) return cached.session;
    const revocationsBefore = this.revocations;
    const found = await this.store.findDeviceByTokenHash(hash);
    // An account that predates the MSC4246 reservation of @:server is taken over by the server.
    if (found === null || found.userId === this.serverUserId) {
      throw new MatrixError('M_UNKNOWN_TOKEN', 'Unrecognised access token', { extra: { soft_logout: false } });
    }
    // A revocation that ran while we looked the token up may have been for this very token:
    // caching the (now stale) answer would keep a logged-out token alive for the cache TTL.
    if (revocationsBefore === this.revocations) {
      if (this.tokenCache.size >= TOKEN_CACHE_MAX) this.tokenCache.clear();
      this.tokenCache.set(hash, { session: found, expires: now + TOKEN_CACHE_TTL_MS });
    }
    return found;
  }

  async isUsernameAvailable(localpart: string): Promise<boolean> {
    this.checkNewLocalpart(localpart);
    return (await this.store.getUser(formatUserId(localpart, this.serverName))) === null;
  }

  async register(opts: {
    localpart: string | null;
    password: string;
    deviceId: string | null;
    displayName: string | null;
    inhibitLogin: boolean;
  }): Promise<{ userId: string; login: LoginResult | null }> {
    const localpart = opts.localpart ?? newOpaqueId(9).toLowerCase().replace(/[^a-z0-9]/g, 'x');
    this.checkNewLocalpart(localpart);
    const userId = formatUserId(localpart, this.serverName);
    if (!(await this.store.createUser(userId, localpart, await hashPassword(opts.password)))) {
      throw new MatrixError('M_USER_IN_USE', 'User ID already taken');
    }
    if (opts.inhibitLogin) return { userId, login: null };
    return { userId, login: await this.startSession(userId, opts.deviceId, opts.displayName) };
  }

  async loginWithPassword(opts: {
    user: string;
    password: string;
    deviceId: string | null;
    displayName: string | null;
  }): Promise<LoginResult> {
    const userId = await this.checkPassword(opts.user, opts.password);
    return this.startSession(userId, opts.deviceId, opts.displayName);
  }

  async logout(session: Session): Promise<void> {
    if (session.deviceId === null) return;
    this.revoke((await this.store.deleteDevices(session.userId, [session.deviceId])).map((d) => d.tokenHash));
    await this.devicesChanged(session.userId);
  }

  async logoutAll(userId: string): Promise<void> {
    this.revoke((await this.store.deleteDevices(userId, null)).map((d) => d.tokenHash));
    await this.devicesChanged(userId);
  }

  listDevices(userId: string): Promise<DeviceRow[]> {
    return this.store.listDevices(userId);
  }

  async getDevice(userId: string, deviceId: string): Promise<DeviceRow> {
    const device = await this.store.getDevice(userId, deviceId);
    if (device === null) throw new MatrixError('M_NOT_FOUND', 'Unknown device');
    return device;
  }

  async setDeviceDisplayName(userId: string, deviceId: string, displayName: string | null): Promise<void> {
    if (!(await this.store.setDeviceDisplayName(userId, deviceId, displayName))) {
      throw new MatrixError('M_NOT_FOUND', 'Unknown device');
    }
    await this.devicesChanged(userId);
  }

  /** Deletes devices the server itself replaces (a user's previous dehydrated device). */
  async deleteDevicesWithoutAuth(userId: string, deviceIds: readonly string[]): Promise<void> {
    this.revoke((await this.store.deleteDevices(userId, deviceIds)).map((d) => d.tokenHash));
    await this.devicesChanged(userId);
  }

  /** Deletes devices after the user re-proved their password (user-interactive auth). */
  async deleteDevices(userId: string, deviceIds: readonly string[], auth: PasswordAuth | undefined): Promise<void> {
    await this.requirePasswordUia(userId, auth);
    this.revoke((await this.store.deleteDevices(userId, deviceIds)).map((d) => d.tokenHash));
    await this.devicesChanged(userId);
  }

  /**
   * Spec "User-Interactive Authentication API" with the single m.login.password stage: without
   * `auth` the answer is a 401 carrying the flows and a new session; a wrong password repeats it
   * with M_FORBIDDEN.
   */
  async requirePasswordUia(userId: string, auth: PasswordAuth | undefined): Promise<void> {
    const challenge = async (session: string, error?: { errcode: 'M_FORBIDDEN'; error: string }) => {
      const extra: Record<string, unknown> = {
        flows: [{ stages: ['m.login.password'] }],
        params: {},
        session,
      };
      if (error !== undefined) extra.completed = [];
      return new MatrixError(error?.errcode ?? 'M_UNAUTHORIZED', error?.error ?? 'Password required', {
        status: 401,
        extra,
      });
    };
    if (auth === undefined || auth.session === undefined) {
      const session = newOpaqueId();
      await this.uia.create(session, userId);
      throw await challenge(session);
    }
    if (!(await this.uia.exists(auth.session, userId, Date.now() - UIA_TTL_MS))) {
      throw new MatrixError('M_NOT_FOUND', 'Unknown or expired user-interactive auth session');
    }
    if (auth.type !== 'm.login.password') {
      throw new MatrixError('M_UNRECOGNIZED', 'Only m.login.password is supported', { status: 400 });
    }
    const who = auth.identifier?.user ?? auth.user;
    if (who === undefined || auth.password === undefined) {
      throw new MatrixError('M_MISSING_PARAM', 'auth needs identifier.user and password');
    }
    const claimed = who.startsWith('@') ? who : formatUserId(who, this.serverName);
    if (claimed !== userId) throw new MatrixError('M_FORBIDDEN', 'Cannot authenticate as another user');
    const ok = await this.verifyUserPassword(userId, auth.password);
    if (!ok) throw await challenge(auth.session, { errcode: 'M_FORBIDDEN', error: 'Invalid password' });
    await this.uia.delete(auth.session);
  }

  private checkNewLocalpart(localpart: string): void {
    if (localpart === '') {
      throw new MatrixError('M_INVALID_USERNAME', 'The empty localpart is reserved for the server user (MSC4246)');
    }
    if (!isValidNewLocalpart(localpart)) {
      throw new MatrixError('M_INVALID_USERNAME', "User ID can only contain characters a-z, 0-9, or '=_-./+'");
    }
    if (Buffer.byteLength(formatUserId(localpart, this.serverName), 'utf8') > 255) {
      throw new MatrixError('M_INVALID_USERNAME', 'User ID may not be longer than 255 bytes');
    }
  }

  private async checkPassword(user: string, password: string): Promise<string> {
    const userId = user.startsWith('@') ? user : formatUserId(user, this.serverName);
    const parsed = parseUserId(userId, { allowEmptyLocalpart: true });
    if (parsed === null || parsed.serverName !== this.serverName) {
      throw new MatrixError('M_FORBIDDEN', 'Invalid username or password');
    }
    if (userId === this.serverUserId) {
      throw new MatrixError('M_FORBIDDEN', 'The server user cannot log in (MSC4246)');
    }
    if (!(await this.verifyUserPassword(userId, password))) {
      throw new MatrixError('M_FORBIDDEN', 'Invalid username or password');
    }
    return userId;
  }

  private async verifyUserPassword(userId: string, password: string): Promise<boolean> {
    const user = await this.store.getUser(userId);
    if (user === null || user.deactivated || user.passwordHash === null) return false;
    return verifyPassword(password, user.passwordHash);
  }

  private async startSession(userId: string, deviceId: string | null, displayName: string | null): Promise<LoginResult> {
    const accessToken = newAccessToken();
    const id = deviceId ?? newDeviceId();
    // Logging in again as an existing device replaces its token: the old one dies now.
    this.revoke([await this.store.upsertDevice(userId, id, displayName, hashToken(accessToken))]);
    return { userId, deviceId: id, accessToken };
  }
}
