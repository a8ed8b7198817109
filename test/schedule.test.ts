import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue, QueueEvents, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { clearPrefix } from './helpers/redis.js';
import { main, parseScheduleArgs, readUniverse } from '../src/cli/schedule.js';
import { createLogger } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { jobIds, runsIndexKey } from '../jobs/keys.js';
import { QUEUE_NAMES, SCHEDULE_QUEUE } from '../jobs/queues.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { addSchedule, createScheduleProcessor, listSchedules, runIdForTick } from '../jobs/schedule.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORKERS = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');
const prefix = `t-sched-${randomUUID().slice(0, 8)}`;
let redis: Redis;
let tmp: string;
const savedPrefix = process.env.MOE_PREFIX;

beforeAll(async () => {
  redis = createRedis('redis://127.0.0.1:6379', { role: 'worker' });
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-sched-'));
  process.env.MOE_PREFIX = prefix;
});

afterAll(async () => {
  if (savedPrefix === undefined) delete process.env.MOE_PREFIX;
  else process.env.MOE_PREFIX = savedPrefix;
  await clearPrefix(redis, prefix);
  await closeRedis(redis);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function captureErrors(fn: () => Promise<number>): Promise<{ code: number; errors: string }> {
  const errors: string[] = [];
  const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
  try {
    return { code: await fn(), errors: errors.join('\n') };
  } finally {
    spy.mockRestore();
  }
}

describe('schedule CLI arguments', () => {
  it('reads a universe file and names the first bad ticker with its position', async () => {
    const good = path.join(tmp, 'core.txt');
    await writeFile(good, '# core book\nspy, tlt\nGLD  uso # oil\n');
    expect(readUniverse(good).tickers).toEqual(['SPY', 'TLT', 'GLD', 'USO']);
    expect(parseScheduleArgs(['add', '--cron', '0 30 16 * * 1-5', '--universe', good])).toMatchObject({ cmd: 'add', spec: { id: 'core', data: { source: 'yahoo', days: 120 } } });
    const bad = path.join(tmp, 'bad.txt');
    await writeFile(bad, 'SPY\n../x\n');
    expect(() => readUniverse(bad)).toThrow(/^bad\.txt: Expected ticker of 1-15 characters .* but received "\.\.\/x"/);
    expect(() => readUniverse('no-such-universe')).toThrow('Expected a universe name (default) or a readable file for --universe but received "no-such-universe"');
  });

  it('returns 2 with the reason for bad usage, before touching Redis', async () => {
    for (const [args, msg] of [
      [[], 'Expected add, list or remove but received nothing'],
      [['add', '--universe', 'default'], 'Expected --cron PATTERN for add but received nothing'],
      [['add', '--cron', '* * * *', '--universe', 'default'], 'Expected cron pattern of 5 or 6 space-separated fields for cron but received "* * * *"'],
      [['add', '--cron', '0 61 16 * * 1-5', '--universe', 'default'], 'Expected a valid cron pattern for cron but received "0 61 16 * * 1-5"'],
      [['add', '--cron', '0 30 16 * * 1-5', '--tz', 'Mars/Base', '--universe', 'default'], 'Expected IANA time zone such as America/New_York for tz but received "Mars/Base"'],
      [['add', '--cron', '0 30 16 * * 1-5', '--universe', 'default', '--source', 'csv'], 'Expected yahoo or sim for --source but received "csv"'],
      [['remove', 'Bad_Id'], 'Expected schedule id of 1-64 characters'],
    ] as const) {
      const r = await captureErrors(() => main([...args], () => undefined));
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.errors).toContain(msg);
    }
  });

  it('adds one schedule when two schedulers add it at once, lists it, and removes it', async () => {
    const lines: string[] = [];
    const add = ['add', '--cron', '0 30 16 * * 1-5', '--tz', 'America/New_York', '--universe', 'default', '--id', 'close'];
    expect(await Promise.all([main(add, (l) => lines.push(l)), main(add, (l) => lines.push(l))])).toEqual([0, 0]);
    expect(lines[0]).toMatch(/^schedule close: '0 30 16 \* \* 1-5' America\/New_York, 48 tickers from yahoo, 120 days; next run \d{4}-\d\d-\d\dT\d\d:30:00\.000Z$/);
    const listed: string[] = [];
    expect(await main(['list'], (l) => listed.push(l))).toBe(0);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatch(/^close\t'0 30 16 \* \* 1-5' America\/New_York\tnext .*\t48 tickers \(default\) from yahoo, 120 days$/);
    // 16:30 in New York is 21:30 or 20:30 UTC, on a weekday.
    const next = new Date(/next (\S+)/.exec(listed[0]!)![1]!);
    expect([20, 21]).toContain(next.getUTCHours());
    expect([1, 2, 3, 4, 5]).toContain(new Date(next.getTime() - 5 * 3600_000).getUTCDay());
    expect(await main(['remove', 'close'], () => undefined)).toBe(0);
    const again = await captureErrors(() => main(['remove', 'close'], () => undefined));
    expect(again.code).toBe(1);
    expect(again.errors).toContain('Expected an existing schedule id for remove but received "close"');
  });
});

describe('scheduled runs', () => {
  it('turns a retried tick into the same single run', async () => {
    const flow = new FlowProducer({ connection: redis, prefix });
    try {
      const proc = createScheduleProcessor({ flow, redis, prefix, runTtlSeconds: 600, logger: createLogger({ name: 't', level: 'silent' }) });
      const job = { id: 'repeat:retry-test:1767225600000', data: { universe: 'default', tickers: ['SPY', 'TLT'], source: 'sim', days: 10 } } as unknown as Job;
      const first = await proc(job);
      const second = await proc(job);
      expect(second.runId).toBe(first.runId);
      expect(first.runId).toBe(runIdForTick(prefix, 'repeat:retry-test:1767225600000'));
      const fetchQ = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix });
      const fetchJobs = await fetchQ.getJobs(['waiting', 'prioritized'], 0, -1);
      expect(fetchJobs.filter((j) => j.data.runId === first.runId).map((j) => j.id).sort()).toEqual([jobIds.fetch(first.runId, 'SPY'), jobIds.fetch(first.runId, 'TLT')]);
      await fetchQ.close();
      expect((await readRunMeta(redis, prefix, first.runId))?.tickers).toEqual(['SPY', 'TLT']);

      const bad = await proc({ id: 'repeat:x:1', data: { universe: 'u', tickers: [], source: 'sim', days: 10 } } as unknown as Job).catch((e: unknown) => e);
      expect((bad as Error).message).toBe('Invalid scheduled run: Expected at least one ticker for tickers but received none');
    } finally {
      await flow.close();
    }
  });

  it('makes exactly one run per tick with two schedulers and two worker processes', async () => {
    await redis.del(runsIndexKey(prefix));
    const conns = [createRedis('redis://127.0.0.1:6379'), createRedis('redis://127.0.0.1:6379'), createRedis('redis://127.0.0.1:6379', { role: 'worker' })];
    const q1 = new Queue(SCHEDULE_QUEUE, { connection: conns[0]!, prefix });
    const q2 = new Queue(SCHEDULE_QUEUE, { connection: conns[1]!, prefix });
    const events = new QueueEvents(SCHEDULE_QUEUE, { connection: conns[2]!, prefix });
    await events.waitUntilReady();
    const children: ChildProcess[] = [];
    try {
      // Two workers processes serving the schedule queue (and nothing else).
      const env = { ...process.env, MOE_PREFIX: prefix, LOG_LEVEL: 'info', REPORTS_DIR: path.join(tmp, 'reports') };
      await Promise.all(
        [0, 1].map(
          () =>
            new Promise<void>((resolve, reject) => {
              const c = spawn(process.execPath, ['--import', TSX, WORKERS, '--only', 'schedule'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
              children.push(c);
              createInterface({ input: c.stdout! }).on('line', (l) => l.includes('workers started') && resolve());
              c.once('exit', (code) => reject(new Error(`schedule worker exited with ${code}`)));
            }),
        ),
      );
      const completed: { jobId: string; runId: string }[] = [];
      const enough = new Promise<void>((resolve) => {
        events.on('completed', ({ jobId, returnvalue }) => {
          completed.push({ jobId, runId: (returnvalue as unknown as { runId: string }).runId });
          if (completed.length >= 3) resolve();
        });
      });
      // Two schedulers add the same every-second schedule at the same moment.
      const spec = { id: 'every-second', cron: '* * * * * *', data: { universe: 'default', tickers: ['SPY', 'TLT', 'GLD'], source: 'sim' as const, days: 10 } };
      await Promise.all([addSchedule(q1, spec), addSchedule(q2, spec)]);
      expect(await listSchedules(q1)).toHaveLength(1);
      await enough;
      expect(await q1.removeJobScheduler('every-second')).toBe(true);
      // Let a tick already taken finish, so every tick's outcome is in `completed`.
      for (;;) {
        const c = await q1.getJobCounts('active', 'waiting', 'delayed', 'prioritized');
        if (Object.values(c).every((n) => n === 0)) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await new Promise((r) => setTimeout(r, 200)); // the last completed event travels through a Redis stream

      const ticks = completed.map((c) => Number(c.jobId.split(':').pop()));
      expect(new Set(ticks).size).toBe(ticks.length);
      for (const c of completed) expect(c.runId).toBe(runIdForTick(prefix, c.jobId));
      // Every run in the index came from one tick, and no tick made two.
      const runs = await redis.zrange(runsIndexKey(prefix), 0, -1);
      expect(runs.sort()).toEqual([...new Set(completed.map((c) => c.runId))].sort());
      expect(runs.length).toBe(completed.length);
      const reportQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix });
      const reports = (await reportQ.getJobs(['waiting-children', 'waiting'], 0, -1)).filter((j) => runs.includes(j.data.runId));
      await reportQ.close();
      expect(reports.length).toBe(runs.length);
    } finally {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null) return resolve();
              c.once('exit', () => resolve());
              c.kill('SIGTERM');
            }),
        ),
      );
      await events.close();
      await Promise.all([q1.close(), q2.close()]);
      await Promise.all(conns.map((c) => closeRedis(c)));
    }
  });
});
