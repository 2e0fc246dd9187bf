import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overHttp, TestClient } from './support/client.ts';
import { formGroup, isOwnCommit, MlsMember, T } from './support/mls-member.ts';
import { freePort, ServerProcess } from './support/server-process.ts';
import { createPostgresDatabaseUrl, usingPostgres } from './support/test-database.ts';

/**
 * The delivery service's one hard rule — exactly one commit per epoch — across two real server
 * processes on one PostgreSQL database: the decision is the database's conditional UPDATE, not
 * anything a process holds in memory. PGlite is single-process, so this runs on PostgreSQL only.
 */
describe.skipIf(!usingPostgres())('MLS commits raced through two server processes', () => {
  let pg: { url: string; drop(): Promise<void> };
  const processes: ServerProcess[] = [];

  beforeAll(async () => {
    pg = (await createPostgresDatabaseUrl()) as { url: string; drop(): Promise<void> };
    for (let i = 0; i < 2; i++) {
      const p = await ServerProcess.create('mls.test', await freePort(), {
        database: { url: pg.url },
        handlers: [{ module: 'mls', config: { claim_rate: { burst: 100 } } }],
      });
      processes.push(p);
      // One after the other: the first migrates, the second finds the schema ready.
      await p.start();
    }
  }, 120_000);

  afterAll(async () => {
    for (const p of processes) await p.destroy();
    await pg?.drop();
  });

  it('accepts exactly one of 12 concurrent commits for one epoch, split over both processes, and releases only its Welcome', async () => {
    const [a, b] = processes.map((p) => overHttp(p.baseUrl)) as [ReturnType<typeof overHttp>, ReturnType<typeof overHttp>];
    const members: MlsMember[] = [];
    for (let i = 0; i < 12; i++) {
      const registered = await TestClient.register(a, `racer${i}`);
      // Half of the devices talk to the other process.
      const client = i % 2 === 0 ? registered : new TestClient(b, registered.userId, registered.deviceId, registered.token);
      members.push(await MlsMember.of(client));
    }
    const [creator, ...others] = members as [MlsMember, ...MlsMember[]];
    await formGroup(creator, others, randomBytes(16));

    // Each racer adds a newcomer of its own: a Welcome released for any loser would show up.
    const newcomers: MlsMember[] = [];
    for (let i = 0; i < 12; i++) {
      const registered = await TestClient.register(a, `newcomer${i}`);
      newcomers.push(await MlsMember.of(i % 2 === 0 ? new TestClient(b, registered.userId, registered.deviceId, registered.token) : registered));
    }
    await Promise.all(newcomers.map((nc) => nc.uploadKeyPackages(1)));
    const packages = await Promise.all(
      members.map(async (m, i) => {
        const nc = newcomers[i];
        return nc === undefined ? '' : ((await m.claim(nc.client.userId, [nc.client.deviceId]))[nc.client.deviceId]?.keyPackage ?? '');
      }),
    );
    const commits = await Promise.all(members.map((m, i) => m.mls.commit([packages[i] ?? ''])));
    const statuses = await Promise.all(
      members.map((m, i) =>
        m.send(T.message, { message: commits[i]?.message, commit_info: { welcome: commits[i]?.welcome, added: [newcomers[i]?.ref] }, request_id: `race-${i}` }),
      ),
    );
    expect(statuses.every((s) => s === 200)).toBe(true);

    const inboxes = await Promise.all(members.map((m) => m.inbox.take()));
    // MSC4244: the winner learns it won from its own commit, fanned out to it like to every member.
    const own = inboxes.map((events, i) => events.find((e) => e.type === T.rejected || (e.type === T.commit && isOwnCommit(e, members[i] as MlsMember))));
    const winners = own.filter((e) => e?.type === T.commit);
    const losers = own.filter((e) => e?.type === T.rejected);
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(11);
    for (const l of losers) expect(l?.content).toMatchObject({ reason: 'wrong_epoch', epoch: 2 });
    const winner = own.findIndex((e) => e?.type === T.commit);
    inboxes.forEach((events, i) => expect(events.filter((e) => e.type === T.commit && !isOwnCommit(e, members[i] as MlsMember))).toHaveLength(i === winner ? 0 : 1));
    const welcomes = await Promise.all(newcomers.map((nc) => nc.inbox.take()));
    welcomes.forEach((events, i) => expect(events.map((e) => e.type)).toEqual(i === winner ? [T.welcome] : []));
    await newcomers[winner]?.mls.join(String(welcomes[winner]?.[0]?.content.welcome));

    // Everyone can move on together: the losers apply the winner's commit and agree on the epoch.
    const winningCommit = commits[winner];
    if (winningCommit === undefined) throw new Error('no winner');
    members[winner]?.mls.apply(winningCommit);
    for (const [i, m] of members.entries()) {
      if (i === winner) continue;
      await m.mls.receive(String(inboxes[i]?.find((e) => e.type === T.commit)?.content.message));
    }
    expect(new Set([...members, newcomers[winner]].map((m) => m?.mls.epoch))).toEqual(new Set([2]));
  }, 120_000);
});
