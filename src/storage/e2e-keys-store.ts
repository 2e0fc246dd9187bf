import { sql } from 'drizzle-orm';
import type { Db } from './drivers/database.ts';
import { ClaimCursors } from './claim-cursors.ts';
import { DeviceListsStore } from './device-lists-store.ts';
import { queryRows } from '../shared/query-rows.ts';

export interface StoredKey {
  algorithm: string;
  keyId: string;
  /** Canonical JSON of the key (a string for unsigned keys, else the signed object). */
  keyJson: string;
  /** JSON its algorithm's module keeps with it (key-algorithms.ts); null for most algorithms. */
  metadata?: string | null;
}

export interface KeyUpload {
  userId: string;
  deviceId: string;
  /** Canonical JSON of the device keys, when the request carried them. */
  deviceKeysJson: string | null;
  oneTimeKeys: readonly StoredKey[];
  fallbackKeys: readonly StoredKey[];
}

export interface KeyCounts {
  /** Unclaimed one-time keys per algorithm. */
  oneTimeKeys: Record<string, number>;
  /** Algorithms whose fallback key has not been handed out yet. */
  unusedFallback: string[];
}

export interface ClaimRequest {
  userId: string;
  deviceId: string;
  algorithm: string;
}

export interface ClaimedKey extends ClaimRequest {
  keyId: string;
  keyJson: string;
  fallback: boolean;
}

export interface DeviceKeysRow {
  userId: string;
  deviceId: string;
  keyJson: string;
  displayName: string | null;
}

export interface SignatureRow {
  signerUserId: string;
  signerKeyId: string;
  targetUserId: string;
  targetKeyId: string;
  signature: string;
  /** Whether the target is a device (else a cross-signing key): which kind of change it makes. */
  targetIsDevice?: boolean;
}

/** A one-time key id already stored with different contents: the whole upload is refused. */
export class OneTimeKeyConflict extends Error {
  constructor(
    readonly keyId: string,
    readonly stored: string,
  ) {
    super(`one-time key ${keyId} already exists with other contents`);
  }
}

type Num = string | number;

/** Device keys, one-time and fallback keys, cross-signing keys and signatures. */
export class E2eKeysStore {
  /** Where claims start looking, per device (process memory: see ClaimCursors). */
  private readonly cursors = new ClaimCursors();

  constructor(private readonly db: Db) {}

  /**
   * Stores an upload all or nothing. Returns whether the device keys changed (the device list
   * then has a new entry) and the counts after the upload.
   */
  async upload(u: KeyUpload): Promise<{ deviceKeysChanged: number | null; counts: KeyCounts }> {
    return this.db.transaction(async (tx) => {
      const db = tx as unknown as Db;
      if (u.oneTimeKeys.length > 0) {
        const conflicts = await queryRows<{ algorithm: string; key_id: string; key_json: string; new_json: string }>(
          db,
          sql`select o.algorithm, o.key_id, o.key_json, k.j as new_json
              from jsonb_to_recordset(${JSON.stringify(u.oneTimeKeys.map((k) => ({ a: k.algorithm, i: k.keyId, j: k.keyJson })))}::jsonb) as k(a text, i text, j text)
              join e2e_one_time_keys o on o.user_id = ${u.userId} and o.device_id = ${u.deviceId} and o.algorithm = k.a and o.key_id = k.i
              where o.key_json <> k.j limit 1`,
        );
        const conflict = conflicts[0];
        if (conflict !== undefined) throw new OneTimeKeyConflict(`${conflict.algorithm}:${conflict.key_id}`, conflict.key_json);
        await db.execute(sql`
          insert into e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json, metadata, created_ts)
          select ${u.userId}, ${u.deviceId}, k.a, k.i, k.j, k.m, ${Date.now()}
          from jsonb_to_recordset(${JSON.stringify(u.oneTimeKeys.map((k) => ({ a: k.algorithm, i: k.keyId, j: k.keyJson, m: k.metadata ?? null })))}::jsonb) as k(a text, i text, j text, m text)
          on conflict do nothing`);
      }
      for (const k of u.fallbackKeys) {
        // The same key uploaded again keeps its used flag (clients re-upload it); a new one is unused.
        await db.execute(sql`
          insert into e2e_fallback_keys as f (user_id, device_id, algorithm, key_id, key_json, metadata, used)
          values (${u.userId}, ${u.deviceId}, ${k.algorithm}, ${k.keyId}, ${k.keyJson}, ${k.metadata ?? null}, false)
          on conflict (user_id, device_id, algorithm) do update
          set key_id = excluded.key_id, key_json = excluded.key_json, metadata = excluded.metadata,
              used = f.used and f.key_id = excluded.key_id and f.key_json = excluded.key_json`);
      }
      let deviceKeysChanged: number | null = null;
      if (u.deviceKeysJson !== null) {
        const written = await queryRows<{ user_id: string }>(
          db,
          sql`insert into e2e_device_keys as d (user_id, device_id, key_json, created_ts)
              values (${u.userId}, ${u.deviceId}, ${u.deviceKeysJson}, ${Date.now()})
              on conflict (user_id, device_id) do update set key_json = excluded.key_json
              where d.key_json is distinct from excluded.key_json
              returning d.user_id`,
        );
        if (written.length > 0) deviceKeysChanged = await DeviceListsStore.appendChanges(tx, [{ userId: u.userId, deviceId: u.deviceId }]);
      }
      return { deviceKeysChanged, counts: await countsIn(db, u.userId, u.deviceId) };
    });
  }

  counts(userId: string, deviceId: string): Promise<KeyCounts> {
    return countsIn(this.db, userId, deviceId);
  }

  /**
   * Hands out one key per request, answers in the requests' order: a one-time key, else the
   * fallback key (marked used, and handed out again until replaced), else null. Requests may
   * name a device more than once (claims of several clients gathered into one batch): each gets a
   * different one-time key while there are enough. The one-time keys are the next in key-id order
   * after the one this process handed out last for that device (see ClaimCursors), then from the
   * lowest. One statement: `skip locked` sends concurrent claimers (on any process) to different
   * rows, and the delete makes each key go out once.
   */
  async claim(requests: readonly ClaimRequest[]): Promise<(ClaimedKey | null)[]> {
    if (requests.length === 0) return [];
    const devices = new Map<string, { u: string; d: string; a: string; h: string; n: number }>();
    for (const r of requests) {
      const key = deviceKey(r);
      const device = devices.get(key);
      if (device === undefined) devices.set(key, { u: r.userId, d: r.deviceId, a: r.algorithm, h: this.cursors.get(r.userId, r.deviceId, r.algorithm) ?? '', n: 1 });
      else device.n++;
    }
    // A device's keys past its cursor, then (only if they were too few: an Append under a Limit
    // is lazy) those up to it; no key id is empty, so the cursor '' means from the lowest. For
    // each of SQL's `for update skip locked`, the rows this statement locked are not locked:
    // the two ranges are disjoint so no row is picked twice. The delete finds the rows it locked
    // by ctid, which the lock keeps, without descending the index again. The fallback keys join
    // the picked counts rather than count per device in a subquery: a request may name 10,000
    // devices, and a correlated count over all picked rows for each took 10 s there (a join, 0.2 s).
    const rows = await queryRows<{ user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string; fallback: boolean }>(
      this.db,
      sql`with req as (
            select * from jsonb_to_recordset(${JSON.stringify([...devices.values()])}::jsonb) as r(u text, d text, a text, h text, n int)),
          picked as (
            select p.* from req cross join lateral (
              select * from (select o.ctid, o.user_id, o.device_id, o.algorithm from e2e_one_time_keys o
                             where o.user_id = req.u and o.device_id = req.d and o.algorithm = req.a and o.key_id > req.h
                             order by o.key_id limit req.n for update skip locked) past
              union all
              select * from (select o.ctid, o.user_id, o.device_id, o.algorithm from e2e_one_time_keys o
                             where o.user_id = req.u and o.device_id = req.d and o.algorithm = req.a and o.key_id <= req.h
                             order by o.key_id limit req.n for update skip locked) lowest
              limit req.n) p),
          claimed as (
            delete from e2e_one_time_keys o where o.ctid = any(array(select p.ctid from picked p))
            returning o.user_id, o.device_id, o.algorithm, o.key_id, o.key_json),
          fell_back as (
            update e2e_fallback_keys f set used = true
            from req left join (select p.user_id, p.device_id, p.algorithm, count(*) as got from picked p group by 1, 2, 3) g
              on g.user_id = req.u and g.device_id = req.d and g.algorithm = req.a
            where f.user_id = req.u and f.device_id = req.d and f.algorithm = req.a and coalesce(g.got, 0) < req.n
            returning f.user_id, f.device_id, f.algorithm, f.key_id, f.key_json)
          select * from (select *, false as fallback from claimed union all select *, true as fallback from fell_back) k
          order by fallback, key_id`,
    );
    // Per device: its one-time keys in key-id order, then its fallback key.
    const byDevice = new Map<string, ClaimedKey[]>();
    for (const r of rows) {
      const k: ClaimedKey = { userId: r.user_id, deviceId: r.device_id, algorithm: r.algorithm, keyId: r.key_id, keyJson: r.key_json, fallback: r.fallback };
      const key = deviceKey(k);
      const list = byDevice.get(key);
      if (list === undefined) byDevice.set(key, [k]);
      else list.push(k);
    }
    for (const d of devices.values()) this.cursors.moved(d.u, d.d, d.a, byDevice.get(deviceKey({ userId: d.u, deviceId: d.d, algorithm: d.a })) ?? []);
    const taken = new Map<string, number>();
    return requests.map((r) => {
      const key = deviceKey(r);
      const keys = byDevice.get(key) ?? [];
      const i = taken.get(key) ?? 0;
      const k = keys[i];
      if (k === undefined) return null;
      // The fallback key goes to every request left once the one-time keys ran out.
      if (!k.fallback) taken.set(key, i + 1);
      return k;
    });
  }

  /**
   * Claims one key of a device that `matches` accepts, for claims with parameters
   * (key-algorithms.ts), which SQL cannot match: the device's one-time keys of the algorithm are
   * read and matched here, then the first match in key-id order that no concurrent claim holds is
   * deleted in one statement (`for update skip locked`: claimers on any process take different
   * keys, and nobody waits on another's whole candidate set); with no match left, the fallback key
   * is handed out (and marked used) when it matches.
   */
  async claimMatching(r: ClaimRequest, matches: (key: { keyId: string; keyJson: string; metadata: string | null }) => boolean): Promise<ClaimedKey | null> {
    const candidates = await queryRows<{ key_id: string; key_json: string; metadata: string | null }>(
      this.db,
      sql`select key_id, key_json, metadata from e2e_one_time_keys
          where user_id = ${r.userId} and device_id = ${r.deviceId} and algorithm = ${r.algorithm} order by key_id`,
    );
    const matching = candidates.filter((c) => matches({ keyId: c.key_id, keyJson: c.key_json, metadata: c.metadata })).map((c) => c.key_id);
    if (matching.length > 0) {
      const [taken] = await queryRows<{ key_id: string; key_json: string }>(
        this.db,
        sql`delete from e2e_one_time_keys o
            where o.user_id = ${r.userId} and o.device_id = ${r.deviceId} and o.algorithm = ${r.algorithm}
              and o.key_id = (select key_id from e2e_one_time_keys
                              where user_id = ${r.userId} and device_id = ${r.deviceId} and algorithm = ${r.algorithm}
                                and key_id in (select jsonb_array_elements_text(${JSON.stringify(matching)}::jsonb))
                              order by key_id limit 1 for update skip locked)
            returning o.key_id, o.key_json`,
      );
      if (taken !== undefined) return { ...r, keyId: taken.key_id, keyJson: taken.key_json, fallback: false };
    }
    const [fallback] = await queryRows<{ key_id: string; key_json: string; metadata: string | null }>(
      this.db,
      sql`select key_id, key_json, metadata from e2e_fallback_keys where user_id = ${r.userId} and device_id = ${r.deviceId} and algorithm = ${r.algorithm}`,
    );
    if (fallback === undefined || !matches({ keyId: fallback.key_id, keyJson: fallback.key_json, metadata: fallback.metadata })) return null;
    // Only the fallback key that was matched is marked used: one replaced meanwhile stays unused.
    const [used] = await queryRows<{ key_id: string }>(
      this.db,
      sql`update e2e_fallback_keys set used = true
          where user_id = ${r.userId} and device_id = ${r.deviceId} and algorithm = ${r.algorithm} and key_id = ${fallback.key_id} and key_json = ${fallback.key_json}
          returning key_id`,
    );
    return used === undefined ? null : { ...r, keyId: fallback.key_id, keyJson: fallback.key_json, fallback: true };
  }

  /** Device keys of these users (all their devices when `deviceIds` is empty), with display names. */
  async deviceKeys(targets: readonly { userId: string; deviceIds: readonly string[] }[]): Promise<DeviceKeysRow[]> {
    if (targets.length === 0) return [];
    const rows = await queryRows<{ user_id: string; device_id: string; key_json: string; display_name: string | null }>(
      this.db,
      sql`select k.user_id, k.device_id, k.key_json, d.display_name
          from jsonb_to_recordset(${JSON.stringify(targets.map((t) => ({ u: t.userId, d: t.deviceIds })))}::jsonb) as q(u text, d jsonb)
          join e2e_device_keys k on k.user_id = q.u and (jsonb_array_length(q.d) = 0 or q.d @> to_jsonb(k.device_id))
          join devices d on d.user_id = k.user_id and d.device_id = k.device_id
          order by k.user_id, k.device_id`,
    );
    return rows.map((r) => ({ userId: r.user_id, deviceId: r.device_id, keyJson: r.key_json, displayName: r.display_name }));
  }

  /** Cross-signing keys of these users: user → key type → canonical JSON. */
  async crossSigningKeys(userIds: readonly string[]): Promise<Map<string, Map<string, string>>> {
    const out = new Map<string, Map<string, string>>();
    if (userIds.length === 0) return out;
    const rows = await queryRows<{ user_id: string; key_type: string; key_json: string }>(
      this.db,
      sql`select user_id, key_type, key_json from e2e_cross_signing_keys
          where user_id in (select jsonb_array_elements_text(${JSON.stringify([...userIds])}::jsonb))`,
    );
    for (const r of rows) {
      let keys = out.get(r.user_id);
      if (keys === undefined) out.set(r.user_id, (keys = new Map()));
      keys.set(r.key_type, r.key_json);
    }
    return out;
  }

  /** Replaces cross-signing keys and records the change in the device-list stream. */
  async setCrossSigningKeys(userId: string, keys: readonly { keyType: string; keyJson: string }[]): Promise<number> {
    return this.db.transaction(async (tx) => {
      for (const k of keys) {
        await tx.execute(sql`
          insert into e2e_cross_signing_keys (user_id, key_type, key_json, created_ts) values (${userId}, ${k.keyType}, ${k.keyJson}, ${Date.now()})
          on conflict (user_id, key_type) do update set key_json = excluded.key_json, created_ts = excluded.created_ts`);
      }
      return DeviceListsStore.appendChanges(tx, [{ userId, deviceId: null }]);
    });
  }

  /** Signatures on these users' keys: the users' own, and those made by `viewer`. */
  async signaturesOn(targetUserIds: readonly string[], viewer: string): Promise<SignatureRow[]> {
    if (targetUserIds.length === 0) return [];
    const rows = await queryRows<{ signer_user_id: string; signer_key_id: string; target_user_id: string; target_key_id: string; signature: string }>(
      this.db,
      sql`select signer_user_id, signer_key_id, target_user_id, target_key_id, signature from e2e_signatures
          where target_user_id in (select jsonb_array_elements_text(${JSON.stringify([...targetUserIds])}::jsonb))
            and (signer_user_id = target_user_id or signer_user_id = ${viewer})`,
    );
    return rows.map((r) => ({ signerUserId: r.signer_user_id, signerKeyId: r.signer_key_id, targetUserId: r.target_user_id, targetKeyId: r.target_key_id, signature: r.signature }));
  }

  /** Stores checked signatures; each target user's device list changes. */
  async addSignatures(signatures: readonly SignatureRow[]): Promise<number> {
    if (signatures.length === 0) return 0;
    return this.db.transaction(async (tx) => {
      await tx.execute(sql`
        insert into e2e_signatures (signer_user_id, signer_key_id, target_user_id, target_key_id, signature)
        select s.su, s.sk, s.tu, s.tk, s.sig
        from jsonb_to_recordset(${JSON.stringify(signatures.map((s) => ({ su: s.signerUserId, sk: s.signerKeyId, tu: s.targetUserId, tk: s.targetKeyId, sig: s.signature })))}::jsonb)
          as s(su text, sk text, tu text, tk text, sig text)
        on conflict (signer_user_id, signer_key_id, target_user_id, target_key_id) do update set signature = excluded.signature`);
      return DeviceListsStore.appendChanges(tx, signatures.map((s) => ({ userId: s.targetUserId, deviceId: s.targetIsDevice === true ? s.targetKeyId : null })));
    });
  }
}

function deviceKey(r: ClaimRequest): string {
  return `${r.userId}\u0000${r.deviceId}\u0000${r.algorithm}`;
}

async function countsIn(db: Db, userId: string, deviceId: string): Promise<KeyCounts> {
  const rows = await queryRows<{ kind: string; algorithm: string; n: Num }>(
    db,
    sql`select 'otk' as kind, algorithm, count(*) as n from e2e_one_time_keys where user_id = ${userId} and device_id = ${deviceId} group by algorithm
        union all
        select 'fallback', algorithm, 0 from e2e_fallback_keys where user_id = ${userId} and device_id = ${deviceId} and not used`,
  );
  const counts: KeyCounts = { oneTimeKeys: {}, unusedFallback: [] };
  for (const r of rows) {
    if (r.kind === 'otk') counts.oneTimeKeys[r.algorithm] = Number(r.n);
    else counts.unusedFallback.push(r.algorithm);
  }
  counts.unusedFallback.sort();
  return counts;
}
