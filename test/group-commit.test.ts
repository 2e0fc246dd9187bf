import { describe, expect, it } from 'vitest';
import { GroupCommit } from '../src/runtime/group-commit.ts';

interface Item {
  id: number;
  key?: string;
  weight?: number;
  poison?: boolean;
}

/** A flush that records its batches and holds each one until released, like a slow database. */
const turn = () => new Promise((r) => setImmediate(r));

function recorder(concurrency = 1, maxItems = 100, maxWeight = 1000) {
  const batches: number[][] = [];
  const sizes: number[] = [];
  const gates: (() => void)[] = [];
  const commit = new GroupCommit<Item, string>({
    onBatch: (n) => sizes.push(n),
    flush: async (items) => {
      batches.push(items.map((i) => i.id));
      await new Promise<void>((release) => gates.push(release));
      if (items.some((i) => i.poison === true)) throw new Error('refused');
      return items.map((i) => `done ${i.id}`);
    },
    concurrency,
    maxItems,
    maxWeight,
    weightOf: (i) => i.weight ?? 1,
    keyOf: (i) => i.key ?? null,
  });
  const releaseAll = async (): Promise<void> => {
    // Batches start one after another; keep opening gates until none is waiting.
    for (let spins = 0; spins < 50; spins++) {
      await new Promise((r) => setImmediate(r));
      while (gates.length > 0) gates.shift()?.();
    }
  };
  return { commit, batches, sizes, releaseAll };
}

describe('group commit', () => {
  it('runs a lone item after one event-loop turn and gathers the items that arrive meanwhile into one batch', async () => {
    const { commit, batches, releaseAll } = recorder();
    const first = commit.run({ id: 1 });
    expect(batches).toEqual([]);
    await turn();
    const rest = [2, 3, 4, 5].map((id) => commit.run({ id }));
    expect(batches).toEqual([[1]]);
    await releaseAll();
    expect(await first).toBe('done 1');
    expect(await Promise.all(rest)).toEqual(['done 2', 'done 3', 'done 4', 'done 5']);
    expect(batches).toEqual([[1], [2, 3, 4, 5]]);
  });

  it('keeps items with the same key in different batches, in arrival order', async () => {
    const { commit, batches, releaseAll } = recorder();
    const one = commit.run({ id: 1 });
    await turn();
    const all = [
      one,
      commit.run({ id: 2, key: 'a' }),
      commit.run({ id: 3, key: 'a' }),
      commit.run({ id: 4, key: 'b' }),
      commit.run({ id: 5, key: 'a' }),
    ];
    await releaseAll();
    await Promise.all(all);
    expect(batches).toEqual([[1], [2, 4], [3], [5]]);
  });

  it('bounds a batch by count and by weight, but sends an overweight item alone', async () => {
    const { commit, batches, releaseAll } = recorder(1, 3, 10);
    const zero = commit.run({ id: 0 });
    await turn();
    const all = [
      zero,
      ...[1, 2, 3, 4].map((id) => commit.run({ id })),
      commit.run({ id: 5, weight: 50 }),
      commit.run({ id: 6, weight: 6 }),
      commit.run({ id: 7, weight: 6 }),
    ];
    await releaseAll();
    await Promise.all(all);
    // 4 then 5 would weigh 51 > 10, so 5 goes alone; 6 and 7 together weigh 12 > 10.
    expect(batches).toEqual([[0], [1, 2, 3], [4, 6], [5], [7]]);
  });

  it('keeps several batches in flight when asked to', async () => {
    const { commit, batches, releaseAll } = recorder(2);
    const all: Promise<string>[] = [];
    for (const id of [1, 2, 3]) {
      all.push(commit.run({ id }));
      await turn();
    }
    // Two batches in the database before either finished; the third item waits for a slot.
    expect(batches).toEqual([[1], [2]]);
    await releaseAll();
    await Promise.all(all);
    expect(batches).toEqual([[1], [2], [3]]);
  });

  it('fails only the item the database refuses: a failed batch is retried item by item', async () => {
    const { commit, batches, releaseAll } = recorder();
    const first = commit.run({ id: 1 });
    await turn();
    const good = commit.run({ id: 2 });
    const bad = commit.run({ id: 3, poison: true }).catch((e: unknown) => e);
    const alsoGood = commit.run({ id: 4 });
    await releaseAll();
    expect(await first).toBe('done 1');
    expect(await good).toBe('done 2');
    expect(await bad).toEqual(new Error('refused'));
    expect(await alsoGood).toBe('done 4');
    expect(batches).toEqual([[1], [2, 3, 4], [2], [3], [4]]);
  });

  it('gathers what arrives before the first batch starts: the requests a PGlite statement kept unread', async () => {
    const { commit, batches, sizes, releaseAll } = recorder();
    const all = [1, 2, 3, 4].map((id) => commit.run({ id }));
    await releaseAll();
    expect(await Promise.all(all)).toEqual(['done 1', 'done 2', 'done 3', 'done 4']);
    expect(batches).toEqual([[1, 2, 3, 4]]);
    expect(sizes).toEqual([4]);
  });

  it('keeps a group of items in one batch, never split, and moves it whole to the next batch when it does not fit', async () => {
    const { commit, batches, sizes, releaseAll } = recorder(1, 4);
    const first = commit.run({ id: 0 });
    await turn();
    const a = commit.run({ id: 1 });
    const group = commit.runAll([{ id: 2 }, { id: 3 }, { id: 4 }, { id: 5 }]);
    const b = commit.run({ id: 6 });
    const big = commit.runAll([7, 8, 9, 10, 11].map((id) => ({ id })));
    await releaseAll();
    expect(await first).toBe('done 0');
    expect(await group).toEqual(['done 2', 'done 3', 'done 4', 'done 5']);
    expect(await Promise.all([a, b])).toEqual(['done 1', 'done 6']);
    expect(await big).toHaveLength(5);
    // The group of 4 does not fit beside item 1 (at most 4 items): it waits for the next batch
    // whole; a group over the limit goes alone.
    expect(batches).toEqual([[0], [1, 6], [2, 3, 4, 5], [7, 8, 9, 10, 11]]);
    expect(sizes).toEqual([1, 2, 4, 5]);
  });

  it('fails a group together when the database refuses one of its items, and its neighbours still succeed', async () => {
    const { commit, batches, releaseAll } = recorder();
    const first = commit.run({ id: 0 });
    await turn();
    const before = commit.run({ id: 1 });
    const group = commit.runAll([{ id: 2 }, { id: 3, poison: true }, { id: 4 }]).catch((e: unknown) => e);
    const after = commit.run({ id: 5 });
    await releaseAll();
    expect(await first).toBe('done 0');
    expect(await group).toEqual(new Error('refused'));
    expect(await Promise.all([before, after])).toEqual(['done 1', 'done 5']);
    expect(batches).toEqual([[0], [1, 2, 3, 4, 5], [1], [2, 3, 4], [5]]);
  });

  it('keeps a group out of a batch holding one of its keys', async () => {
    const { commit, batches, releaseAll } = recorder();
    const first = commit.run({ id: 0 });
    await turn();
    const all = [commit.run({ id: 1, key: 'k' }), commit.runAll([{ id: 2 }, { id: 3, key: 'k' }]), commit.run({ id: 4 })];
    await releaseAll();
    await Promise.all([first, ...all]);
    expect(batches).toEqual([[0], [1, 4], [2, 3]]);
  });
});
