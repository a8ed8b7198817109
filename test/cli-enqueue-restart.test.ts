import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterEach, describe, expect, it } from 'vitest';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { loadConfig } from '../src/config.js';
import { initParams, saveModel } from '../src/router/model.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { clearPrefix, freePort } from './helpers/redis.js';

/**
 * `npm run enqueue` as a child process, watching a run on a Redis server of its own (AOF on) that restarts in the
 * middle of the watch, with `npm run workers` as another child. The workers are killed, not closed, at the end: a
 * BullMQ worker closed while its connection is still reconnecting waits for an ioredis `end` event that never comes
 * (taskforcesh/bullmq#4656), which would hang this file's clean-up whenever the test fails early.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ENQUEUE = path.join(REPO, 'src/cli/enqueue.ts');
const WORKERS = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');
const haveRedisServer = spawnSync('redis-server', ['--version']).status === 0;
if (!haveRedisServer) console.warn('cli-enqueue-restart: skipped, no redis-server binary on PATH');


function startRedis(args: string[]): Promise<ChildProcess> {
  const p = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).on('line', (l) => l.includes('Ready to accept connections') && resolve(p));
    p.once('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
}

/** SIGTERM: Redis' own shutdown (AOF flushed); every client sees its connection drop. */
function stopRedis(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  });
}

/** A child's output as lines, with a wait for the first line matching a pattern (or the child's exit). */
function lineReader(child: ChildProcess, stream: 'stdout' | 'stderr') {
  const lines: string[] = [];
  const waiters: { re: RegExp; resolve: (l: string | undefined) => void }[] = [];
  createInterface({ input: child[stream]! }).on('line', (l) => {
    lines.push(l);
    for (const w of waiters.filter((x) => x.re.test(l))) w.resolve(l);
  });
  child.once('exit', () => waiters.forEach((w) => w.resolve(undefined)));
  return {
    lines,
    /** The first line matching `re`; undefined when the child exited without one. */
    waitFor(re: RegExp): Promise<string | undefined> {
      const seen = lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      if (child.exitCode !== null) return Promise.resolve(undefined);
      return new Promise((resolve) => waiters.push({ re, resolve }));
    },
  };
}

function kill(p: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) return resolve();
    p.once('exit', () => resolve());
    p.kill('SIGKILL');
  });
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  // Every step runs, newest first, even when one fails: a leaked redis-server outlives the test run.
  const errors: unknown[] = [];
  for (const c of cleanups.splice(0).reverse()) await c().catch((e: unknown) => errors.push(e));
  if (errors.length > 0) throw errors[0];
});

/** One run in one shard (the default size), and one cut into four shards through `MOE_SHARD_SIZE` (5, 5, 5, 1). */
const CASES = [
  { shards: 1, env: {} as Record<string, string> },
  { shards: 4, env: { MOE_SHARD_SIZE: '5' } as Record<string, string> },
];

describe.skipIf(!haveRedisServer).each(CASES)('enqueue across a Redis restart ($shards shard run)', ({ shards, env: shardEnv }) => {
  it('reconnects, says so once, keeps watching and exits 0 when the workers finish the run', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-enqueue-restart-'));
    cleanups.push(() => rm(tmp, { recursive: true, force: true }));
    const port = await freePort();
    const redisArgs = ['--port', String(port), '--bind', '127.0.0.1', '--dir', tmp, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--maxmemory-policy', 'noeviction'];
    let server = await startRedis(redisArgs);
    cleanups.push(() => stopRedis(server));

    const redisUrl = `redis://127.0.0.1:${port}`;
    const modelPath = path.join(tmp, 'router.safetensors');
    await saveModel(modelPath, { hidden: 16, params: initParams(16, 11), temperature: 1 });
    const env = {
      REDIS_URL: redisUrl,
      MOE_PREFIX: `t-enq-restart-${randomUUID().slice(0, 8)}`,
      MOE_MODEL: modelPath,
      REPORTS_DIR: path.join(tmp, 'reports'),
      FEATURE_TTL_SECONDS: '600',
      RUN_TTL_SECONDS: '600',
      ...shardEnv,
    };
    const config = loadConfig(env);
    // A reconnecting connection (role worker), as the workers' own: it outlives the restart.
    const admin = createRedis(redisUrl, { role: 'worker' });
    const reportQueue = new Queue(QUEUE_NAMES.report, { connection: admin, prefix: config.prefix });
    // The restart is deliberate: this side's connection errors are expected and would otherwise print as stacks.
    const adminErrors: string[] = [];
    reportQueue.on('error', (e) => adminErrors.push(e.message));
    cleanups.push(async () => {
      // With its server down (a test that failed mid-restart) there is nothing to clear, and the command would wait.
      if (server.exitCode === null && server.signalCode === null) await clearPrefix(admin, config.prefix);
      await reportQueue.close();
      await closeRedis(admin);
    });
    // The run cannot end before the restart: its report job waits in the paused queue until we resume it.
    await reportQueue.pause();
    const workers = spawn(process.execPath, ['--import', TSX, WORKERS, '--only', 'fetch,route,report', '--threads', '1'], {
      cwd: REPO,
      env: { ...process.env, ...env, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    cleanups.push(() => kill(workers));
    expect(await lineReader(workers, 'stdout').waitFor(/"msg":"workers started"/)).toBeDefined();

    const tickers = benchTickers(16);
    const child = spawn(process.execPath, ['--import', TSX, ENQUEUE, ...tickers, '--source', 'sim', '--days', '20'], {
      cwd: REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    cleanups.push(() => kill(child));
    const out = lineReader(child, 'stdout');
    const err = lineReader(child, 'stderr');

    const started = await out.waitFor(shards > 1 ? new RegExp(`^run \\S+: 16 tickers from sim in ${shards} shards$`) : /^run \S+: 16 tickers from sim$/);
    expect(started, err.lines.join('\n')).toBeDefined();
    const runId = /^run (\S+):/.exec(started!)![1]!;
    // Every ticker fetched, routing (every shard routed, their outputs in Redis): the watch is in the middle of the
    // run when Redis goes away.
    const routing = shards > 1 ? new RegExp(`^fetched 16/16; routing, ${shards}/${shards} shards routed$`) : /^fetched 16\/16; routing$/;
    expect(await out.waitFor(routing), err.lines.join('\n')).toBeDefined();

    await stopRedis(server);
    const lost = await err.waitFor(/lost Redis/);
    server = await startRedis(redisArgs);
    expect(err.lines.join('\n')).toMatch(/^enqueue: lost Redis \([^)]+\); reconnecting…$/m);
    expect(await err.waitFor(/Redis is back/)).toBe(`enqueue: Redis is back; still watching run ${runId}`);
    await reportQueue.resume();

    expect(await exited, err.lines.join('\n')).toBe(0);
    expect(out.lines).toContain('reported: 16 routed, 0 failed');
    expect(out.lines.some((l) => l.startsWith('report: '))).toBe(true);
    // One line each way, and nothing else: no stack traces, no ioredis retry wording.
    expect(err.lines).toEqual([lost, `enqueue: Redis is back; still watching run ${runId}`]);
  });
});
