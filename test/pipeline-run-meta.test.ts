import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { runKey, runsIndexKey, shardKey } from '../jobs/keys.js';
import { evalScript } from '../jobs/scripts.js';
import { BlockStore } from '../workers/block-store.js';
import { bumpRunCounter, createRunMeta, readRunMeta, TICKERS_HEAD, readRunTickers, storeFetched, storeShardOutput, updateRunMeta, type RunStore } from '../jobs/run-meta.js';

const prefix = `t-meta-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let store: RunStore;

beforeAll(() => {
  redis = createRedis('redis://127.0.0.1:6379');
  store = { redis, prefix, ttlSeconds: 300 };
});

afterAll(async () => {
  for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) {
    if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
  }
  await closeRedis(redis);
});

describe('run metadata', () => {
  it('creates a hash with a TTL, counts progress and records the outcome', async () => {
    const runId = randomUUID();
    await createRunMeta(store, { runId, source: 'csv', tickers: ['AAPL', 'TLT'], createdAt: new Date().toISOString() });
    expect(await redis.ttl(runKey(prefix, runId))).toBeGreaterThan(290);
    await bumpRunCounter(store, runId, 'fetched');
    await bumpRunCounter(store, runId, 'fetchFailed');
    await updateRunMeta(store, runId, { status: 'finished', routed: 1, reportDir: '/r/x' });
    expect(await readRunMeta(redis, prefix, runId)).toMatchObject({
      runId,
      status: 'finished',
      source: 'csv',
      tickers: ['AAPL', 'TLT'],
      fetched: 1,
      fetchFailed: 1,
      routed: 1,
      reportDir: '/r/x',
    });
    expect(await redis.zscore(runsIndexKey(prefix), runId)).not.toBeNull();
  });

  it('never resurrects an expired run as a hash without TTL', async () => {
    const runId = randomUUID();
    await bumpRunCounter(store, runId, 'fetched');
    await updateRunMeta(store, runId, { status: 'failed' });
    expect(await redis.exists(runKey(prefix, runId))).toBe(0);
    expect(await readRunMeta(redis, prefix, runId)).toBeUndefined();
  });

  it('stores a fetched block with its TTL and counts it, binary-safe, in one step', async () => {
    const runId = randomUUID();
    await createRunMeta(store, { runId, source: 'sim', tickers: ['SPY', 'TLT'], createdAt: new Date().toISOString() });
    const block = Buffer.from([0, 255, 13, 10, 0x80, 0x4d, 0x4f, 0x45]);
    await storeFetched(store, runId, `${prefix}:feat:SPY`, block, 120);
    await storeFetched(store, runId, `${prefix}:feat:TLT`, Buffer.alloc(0), 120);
    expect(Buffer.compare((await redis.getBuffer(`${prefix}:feat:SPY`))!, block)).toBe(0);
    expect(await redis.ttl(`${prefix}:feat:SPY`)).toBeGreaterThan(110);
    expect(await redis.ttl(`${prefix}:feat:SPY`)).toBeLessThanOrEqual(120);
    expect((await readRunMeta(redis, prefix, runId))?.fetched).toBe(2);
  });

  it('stores a block of a run whose hash expired without resurrecting the hash, and refuses a bad TTL', async () => {
    const runId = randomUUID();
    await storeFetched(store, runId, `${prefix}:feat:GLD`, Buffer.from('x'), 60);
    expect(await redis.exists(`${prefix}:feat:GLD`)).toBe(1);
    expect(await redis.exists(runKey(prefix, runId))).toBe(0);
    await expect(storeFetched(store, runId, `${prefix}:feat:GLD`, Buffer.from('x'), 0)).rejects.toThrow(
      'Expected positive integer for ttlSeconds but received 0',
    );
  });

  it('stores the blocks that arrive in one turn with one script call per run, each job waiting for its own', async () => {
    const [a, b] = [randomUUID(), randomUUID()];
    for (const runId of [a, b]) await createRunMeta(store, { runId, source: 'sim', tickers: ['X'], createdAt: new Date().toISOString() });
    const calls = vi.spyOn(redis, 'evalsha');
    try {
      const blocks = new BlockStore(store, 120, { maxBlocks: 3 });
      const key = (runId: string, i: number) => `${prefix}:run:${runId}:feat:T${i}`;
      const block = (i: number) => Buffer.from([i, 0, 255, 13, 10]);
      // Seven blocks of run a (three calls of at most three) and two of run b (one call), all in one turn.
      const stored = [...[0, 1, 2, 3, 4, 5, 6].map((i) => blocks.store(a, key(a, i), block(i))), ...[0, 1].map((i) => blocks.store(b, key(b, i), block(i)))];
      expect(await Promise.all(stored)).toEqual(Array(9).fill(undefined));
      expect(calls).toHaveBeenCalledTimes(4);
      for (const i of [0, 1, 2, 3, 4, 5, 6]) expect(Buffer.compare((await redis.getBuffer(key(a, i)))!, block(i))).toBe(0);
      expect(await redis.ttl(key(a, 6))).toBeGreaterThan(110);
      expect((await readRunMeta(redis, prefix, a))?.fetched).toBe(7);
      expect((await readRunMeta(redis, prefix, b))?.fetched).toBe(2);

      // A run that has ended takes none of them and every job hears why; a failed call fails every job of its batch.
      await updateRunMeta(store, b, { status: 'finished' });
      expect(await Promise.all([blocks.store(b, key(b, 7), block(7)), blocks.store(b, key(b, 8), block(8))])).toEqual(['finished', 'finished']);
      expect(await redis.exists(key(b, 7), key(b, 8))).toBe(0);
      const broken = randomUUID();
      await redis.set(runKey(prefix, broken), 'not a hash', 'EX', 60);
      const failing = [blocks.store(broken, key(broken, 0), block(0)), blocks.store(broken, key(broken, 1), block(1))];
      for (const f of failing) await expect(f).rejects.toThrow(/WRONGTYPE/);
      expect(await redis.exists(key(broken, 0), key(broken, 1))).toBe(0);
    } finally {
      calls.mockRestore();
    }
    expect(() => new BlockStore(store, 0)).toThrow('Expected integer ≥ 1 for ttlSeconds but received 0');
  });

  it('stores shard outputs with their TTL and counts each shard once, however often it is stored', async () => {
    const runId = randomUUID();
    await createRunMeta(store, { runId, source: 'sim', tickers: ['SPY', 'TLT', 'GLD'], createdAt: new Date().toISOString(), shards: 3 });
    expect(await readRunMeta(redis, prefix, runId)).toMatchObject({ shards: 3, shardsRouted: 0 });
    expect(await readRunTickers(redis, prefix, runId)).toEqual(['SPY', 'TLT', 'GLD']);
    expect(await storeShardOutput(store, runId, shardKey(prefix, runId, 0), '{"a":1}', 120)).toBeUndefined();
    // A retried route job stores its shard again: the output is replaced, the count stays.
    expect(await storeShardOutput(store, runId, shardKey(prefix, runId, 0), '{"a":2}', 120)).toBeUndefined();
    await storeShardOutput(store, runId, shardKey(prefix, runId, 2), '{"c":1}', 120);
    expect(await redis.get(shardKey(prefix, runId, 0))).toBe('{"a":2}');
    expect(await redis.ttl(shardKey(prefix, runId, 0))).toBeGreaterThan(110);
    expect(await readRunMeta(redis, prefix, runId)).toMatchObject({ shards: 3, shardsRouted: 2 });
    // An ended run takes nothing more.
    await updateRunMeta(store, runId, { status: 'finished' });
    expect(await storeShardOutput(store, runId, shardKey(prefix, runId, 1), '{"b":1}', 120)).toBe('finished');
    expect(await redis.exists(shardKey(prefix, runId, 1))).toBe(0);
    expect(await readRunMeta(redis, prefix, runId)).toMatchObject({ shardsRouted: 2 });
    // A hash written before runs had shards reads as one shard.
    const old = randomUUID();
    await redis.hset(runKey(prefix, old), { runId: old, status: 'queued', source: 'sim', tickers: '["SPY"]', fetched: 0, fetchFailed: 0, createdAt: new Date().toISOString() });
    expect(await readRunMeta(redis, prefix, old)).toMatchObject({ shards: 1, shardsRouted: 0 });
    expect(await readRunTickers(redis, prefix, randomUUID())).toBeUndefined();
  });

  it('reads a run without its ticker list for watchers and pages: the first tickers and the count', async () => {
    const runId = randomUUID();
    const tickers = Array.from({ length: 30_000 }, (_, i) => `T${i}`);
    await createRunMeta(store, { runId, source: 'sim', tickers, createdAt: new Date().toISOString(), shards: 30 });
    expect((await readRunMeta(redis, prefix, runId))!.tickers).toEqual(tickers);
    const head = (await readRunMeta(redis, prefix, runId, { tickerList: false }))!;
    expect(head).toMatchObject({ runId, status: 'queued', tickerCount: 30_000, shards: 30, tickers: tickers.slice(0, TICKERS_HEAD) });
    // The list itself is not read: a hash whose list is unreadable still answers the short read.
    await redis.hset(runKey(prefix, runId), 'tickers', '[not json');
    expect((await readRunMeta(redis, prefix, runId, { tickerList: false }))!.tickerCount).toBe(30_000);
    await expect(readRunMeta(redis, prefix, runId)).rejects.toThrow(SyntaxError);
    // A hash written before the count and head were kept is read whole.
    const old = randomUUID();
    await redis.hset(runKey(prefix, old), { runId: old, status: 'finished', source: 'csv', tickers: JSON.stringify(tickers.slice(0, 12)), fetched: 12, fetchFailed: 0, createdAt: '2026-01-01T00:00:00Z' });
    await redis.expire(runKey(prefix, old), 60);
    expect(await readRunMeta(redis, prefix, old, { tickerList: false })).toMatchObject({ tickerCount: 12, tickers: tickers.slice(0, TICKERS_HEAD), status: 'finished' });
    expect(await readRunMeta(redis, prefix, randomUUID(), { tickerList: false })).toBeUndefined();
  });

  it('runs scripts by SHA1, sending the text only to a server that does not know it yet', async () => {
    // A script no server has seen: the first call must fall back from NOSCRIPT to EVAL, later ones go by SHA1.
    const script = `-- ${randomUUID()}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`;
    const sha = createHash('sha1').update(script).digest('hex');
    const key = `${prefix}:script-counter`;
    expect(await redis.script('EXISTS', sha)).toEqual([0]);
    expect(await evalScript(redis, script, 1, key, 2)).toBe(2);
    expect(await redis.script('EXISTS', sha)).toEqual([1]);
    expect(await evalScript(redis, script, 1, key, 3)).toBe(5);
    // A script's own error is the caller's, not a reason to resend it.
    await expect(evalScript(redis, "return redis.error_reply('BROKEN: on purpose')", 0)).rejects.toThrow(/BROKEN: on purpose/);
  });

  it('trims index entries older than the run TTL', async () => {
    const old = randomUUID();
    await redis.zadd(runsIndexKey(prefix), Date.now() - 301_000, old);
    await createRunMeta(store, { runId: randomUUID(), source: 'sim', tickers: ['SPY'], createdAt: new Date().toISOString() });
    expect(await redis.zscore(runsIndexKey(prefix), old)).toBeNull();
    expect(await redis.ttl(runsIndexKey(prefix))).toBeGreaterThan(290);
  });
});
