import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
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
import { PayloadError } from '../jobs/payloads.js';
import { createLogger } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { jobIds, runsIndexKey } from '../jobs/keys.js';
import { QUEUE_NAMES, SCHEDULE_QUEUE } from '../jobs/queues.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { addSchedule, createScheduleProcessor, listSchedules, MIN_CRON_INTERVAL_MS, runIdForTick, validateCron } from '../jobs/schedule.js';

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
    expect(lines[0]).toMatch(/^schedule close: '0 30 16 \* \* 1-5' America\/New_York, 50 tickers from yahoo, 120 days; next run \d{4}-\d\d-\d\dT\d\d:30:00\.000Z$/);
    const listed: string[] = [];
    expect(await main(['list'], (l) => listed.push(l))).toBe(0);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatch(/^close\t'0 30 16 \* \* 1-5' America\/New_York\tnext .*\t50 tickers \(default\) from yahoo, 120 days$/);
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

describe('schedule --tickers-file', () => {
  it('reads a ticker file in the universe format, defaulting the id to its name, and names a bad ticker with its line', async () => {
    const file = path.join(tmp, 'Big Book.txt');
    await writeFile(file, '# desk A\nspy, tlt\nGLD # gold\n');
    expect(parseScheduleArgs(['add', '--cron', '0 30 16 * * 1-5', '--tickers-file', file, '--source', 'sim'])).toEqual({
      cmd: 'add',
      spec: { id: 'big-book', cron: '0 30 16 * * 1-5', data: { universe: file, tickers: ['SPY', 'TLT', 'GLD'], source: 'sim', days: 120 } },
    });
    const bad = path.join(tmp, 'bad-line.txt');
    await writeFile(bad, 'SPY\n\nTLT, X:Y\n');
    for (const [args, msg] of [
      [['add', '--cron', '0 0 18 * * *', '--tickers-file', bad], 'bad-line.txt: Expected ticker of 1-15 characters A-Z 0-9 . - = ^ (starting with a letter or digit) for ticker but received "X:Y" (line 3)'],
      [['add', '--cron', '0 0 18 * * *', '--tickers-file', file, '--universe', 'default'], 'Expected one of --universe and --tickers-file for add but received both'],
      [['add', '--cron', '0 0 18 * * *'], 'Expected --universe NAME|FILE or --tickers-file FILE for add but received nothing'],
      [['add', '--cron', '0 0 18 * * *', '--tickers-file', '-'], 'Expected --id ID with --tickers-file - (stdin has no name to default to) but received nothing'],
    ] as const) {
      expect(() => parseScheduleArgs([...args]), args.join(' ')).toThrow(msg);
    }
  });

  it('adds a schedule whose tickers come from stdin', async () => {
    const r = spawnSync(process.execPath, ['--import', TSX, path.join(REPO, 'src/cli/schedule.ts'), 'add', '--cron', '0 0 18 * * 1-5', '--tickers-file', '-', '--id', 'piped', '--source', 'sim'], {
      cwd: REPO,
      encoding: 'utf8',
      env: { ...process.env, MOE_PREFIX: prefix },
      input: 'spy tlt\n# more\ngld,uso\n',
      timeout: 30_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^schedule piped: '0 0 18 \* \* 1-5' UTC, 4 tickers from sim, 120 days; next run \S+\n$/);
    const listed: string[] = [];
    expect(await main(['list'], (l) => listed.push(l))).toBe(0);
    expect(listed.filter((l) => l.startsWith('piped\t'))).toEqual([expect.stringMatching(/\t4 tickers \(stdin\) from sim, 120 days$/)]);
    expect(await main(['remove', 'piped'], () => undefined)).toBe(0);
  });
});

describe('cron interval', () => {
  it('refuses a pattern firing more than once a minute, in schedule add and in the validator', async () => {
    for (const ok of ['0 * * * * *', '* * * * *', '30 */5 * * * *', '0 30 16 * * 1-5', '0 0 0 29 2 *']) expect(validateCron(ok)).toBe(ok);
    for (const [cron, apart] of [
      ['* * * * * *', 1],
      ['*/30 * * * * *', 30],
      ['0,59 0 9 * * 1-5', 59],
      ['0-5 30 16 * * *', 1],
    ] as const) {
      const msg = `Expected cron pattern firing at most once a minute for cron but received "${cron}" (ticks ${apart} s apart)`;
      expect(() => validateCron(cron), cron).toThrow(new PayloadError('cron', msg));
      expect(() => parseScheduleArgs(['add', '--cron', cron, '--universe', 'default']), cron).toThrow(msg);
      const r = await captureErrors(() => main(['add', '--cron', cron, '--universe', 'default'], () => undefined));
      expect(r.code, cron).toBe(2);
      expect(r.errors).toBe(`schedule: ${msg}\nRun with --help for usage.`);
    }
    // Below the minimum nothing is stored, even through the library call.
    const q = new Queue(SCHEDULE_QUEUE, { connection: redis, prefix });
    try {
      const spec = { id: 'too-often', cron: '*/10 * * * * *', data: { universe: 'default', tickers: ['SPY'], source: 'sim' as const, days: 10 } };
      await expect(addSchedule(q, spec)).rejects.toThrow('Expected cron pattern firing at most once a minute for cron but received "*/10 * * * * *" (ticks 10 s apart)');
      expect((await listSchedules(q)).map((s) => s.id)).not.toContain('too-often');
      expect(() => validateCron('*/10 * * * * *', 10_000)).not.toThrow();
      expect(() => validateCron('*/10 * * * * *', 20_000)).toThrow('at most once every 20 s for cron');
      expect(MIN_CRON_INTERVAL_MS).toBe(60_000);
    } finally {
      await q.close();
    }
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
      // Two schedulers add the same every-second schedule at the same moment (below the once-a-minute minimum, which
      // a test may lower to see several ticks in seconds).
      const spec = { id: 'every-second', cron: '* * * * * *', data: { universe: 'default', tickers: ['SPY', 'TLT', 'GLD'], source: 'sim' as const, days: 10 } };
      await Promise.all([addSchedule(q1, spec, { minIntervalMs: 1000 }), addSchedule(q2, spec, { minIntervalMs: 1000 })]);
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
