import { and, count, eq, sql } from 'drizzle-orm';
import { type Db, queryRows } from '../../src/sdk/index.ts';
import { mlsKeyPackages } from './schema.ts';

export interface StoredKeyPackage {
  ref: string;
  ciphersuite: string;
  keyPackage: string;
}

export interface ClaimedKeyPackage {
  keyPackage: string;
  lastResort: boolean;
}

/** The KeyPackage directory's SQL: intention-named, one statement each where it matters. */
export class KeyPackageStore {
  constructor(private readonly db: Db) {}

  /** How many one-time packages the device has left, and whether it has a last-resort one. */
  async count(userId: string, deviceId: string): Promise<{ count: number; lastResort: boolean }> {
    const rows = await this.db
      .select({ lastResort: mlsKeyPackages.lastResort, n: count() })
      .from(mlsKeyPackages)
      .where(and(eq(mlsKeyPackages.userId, userId), eq(mlsKeyPackages.deviceId, deviceId)))
      .groupBy(mlsKeyPackages.lastResort);
    return {
      count: Number(rows.find((r) => !r.lastResort)?.n ?? 0),
      lastResort: rows.some((r) => r.lastResort && Number(r.n) > 0),
    };
  }

  /** Stores one-time packages; one already stored (same KeyPackageRef) is kept once. */
  async addOneTime(userId: string, deviceId: string, packages: readonly StoredKeyPackage[], now = Date.now()): Promise<void> {
    if (packages.length === 0) return;
    await this.db
      .insert(mlsKeyPackages)
      .values(packages.map((p) => ({ userId, deviceId, ...p, lastResort: false, createdTs: now })))
      .onConflictDoNothing();
  }

  /** Sets the device's last-resort package, replacing the previous one in the same statement. */
  async setLastResort(userId: string, deviceId: string, p: StoredKeyPackage, now = Date.now()): Promise<void> {
    await this.db.execute(sql`
      insert into mls_key_packages (user_id, device_id, ref, ciphersuite, key_package, last_resort, created_ts)
      values (${userId}, ${deviceId}, ${p.ref}, ${p.ciphersuite}, ${p.keyPackage}, true, ${now})
      on conflict (user_id, device_id) where last_resort
      do update set ref = excluded.ref, ciphersuite = excluded.ciphersuite, key_package = excluded.key_package, created_ts = excluded.created_ts`);
  }

  /** The devices of a local user that still exist and have a package (in the ciphersuite, if given). */
  async devicesWithPackages(userId: string, ciphersuite: string | null): Promise<string[]> {
    const rows = await queryRows<{ device_id: string }>(
      this.db,
      sql`select distinct k.device_id from mls_key_packages k
          join devices d on d.user_id = k.user_id and d.device_id = k.device_id
          where k.user_id = ${userId} ${ciphersuite === null ? sql`` : sql`and k.ciphersuite = ${ciphersuite}`}
          order by k.device_id`,
    );
    return rows.map((r) => r.device_id);
  }

  /**
   * Claims one package of a device: the oldest one-time package, deleted in the same statement
   * (`for update skip locked`, so two concurrent claimers never get the same one), or else the
   * last-resort package, which stays.
   */
  async claim(userId: string, deviceId: string, ciphersuite: string | null): Promise<ClaimedKeyPackage | null> {
    const suite = ciphersuite === null ? sql`` : sql`and ciphersuite = ${ciphersuite}`;
    const [oneTime] = await queryRows<{ key_package: string }>(
      this.db,
      sql`delete from mls_key_packages k
          where k.id = (select id from mls_key_packages
                        where user_id = ${userId} and device_id = ${deviceId} and not last_resort ${suite}
                        order by id limit 1 for update skip locked)
          returning k.key_package`,
    );
    if (oneTime !== undefined) return { keyPackage: oneTime.key_package, lastResort: false };
    const [lastResort] = await queryRows<{ key_package: string }>(
      this.db,
      sql`select key_package from mls_key_packages
          where user_id = ${userId} and device_id = ${deviceId} and last_resort ${suite}`,
    );
    return lastResort === undefined ? null : { keyPackage: lastResort.key_package, lastResort: true };
  }
}
