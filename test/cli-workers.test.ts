import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/workers.js';
import { prettyLine } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { initParams, saveModel } from '../src/router/model.js';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { enqueueRun } from '../jobs/enqueue-run.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { watchRun } from '../jobs/watch-run.js';
import { clearPrefix } from './helpers/redis.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');
let tmp: string;
let modelPath: string;
const prefix = `t-cliw-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-cliw-'));
  modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 2), temperature: 1 });
});

afterAll(async () => {
  const redis = createRedis('redis://127.0.0.1:6379');
  for (const name of Object.values(QUEUE_NAMES)) {
    const q = new Queue(name, { connection: redis, prefix });
    await q.obliterate({ force: true });
    await q.close();
  }
  await closeRedis(redis);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('workers CLI', () => {
  it('returns exit status 2 on an unknown stage or flag, before starting anything', async () => {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      for (const [args, msg] of [
        [['--only', 'fetch,gpu'], 'Expected one of fetch, route, report, schedule for --only but received "gpu"'],
        [['--concurrency', '0'], 'Expected integer in 1..64 for --concurrency but received "0"'],
        [['extra'], 'Expected no positional arguments but received "extra"'],
      ] as const) {
        errors.length = 0;
        expect(await main([...args])).toBe(2);
        expect(errors.join('\n')).toContain(msg);
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('starts, logs JSON, and shuts down cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, '--only', 'route,report'], {
      env: { ...process.env, MOE_PREFIX: prefix, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports'), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Record<string, unknown>[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const started = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const o = JSON.parse(line) as Record<string, unknown>;
        lines.push(o);
        if (o.msg === 'workers started') resolve();
      });
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await Promise.race([started, exited.then(() => Promise.reject(new Error(`workers exited early: ${stderr}`)))]);
    const startLine = lines.find((l) => l.msg === 'workers started')!;
    expect(startLine.roles).toEqual(['route', 'report']);
    expect(startLine.prefix).toBe(prefix);
    expect(String(startLine.backend)).toMatch(/^(simd-avx512|simd-avx2|scalar)$/);
    // auto on a machine without a usable GPU: the line says why the router runs on the CPU.
    expect(typeof startLine.fallbackReason).toBe('string');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(lines.map((l) => l.msg)).toContain('stopped');
  });
});

/** A `npm run workers` process of every pipeline stage; resolves once it has started. */
function startWorkersProcess(env: NodeJS.ProcessEnv) {
  const child = spawn(process.execPath, ['--import', TSX, CLI, '--only', 'fetch,route,report', '--threads', '1'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: () => void }[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  createInterface({ input: child.stdout }).on('line', (line) => {
    const o = JSON.parse(line) as Record<string, unknown>;
    lines.push(o);
    for (const w of waiters.filter((x) => x.msg === o.msg)) w.resolve();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = (msg: string) =>
    lines.some((l) => l.msg === msg) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ msg, resolve }));
  const started = Promise.race([waitFor('workers started'), exited.then(() => Promise.reject(new Error(`workers exited early: ${stderr}`)))]);
  return { child, lines, exited, waitFor, started };
}

describe('workers CLI on a sharded run', () => {
  it('stops on SIGTERM with shards still to route and exits 0; the next process finishes the run, every ticker once', async () => {
    const shardPrefix = `t-cliw-shards-${randomUUID().slice(0, 8)}`;
    const env = { ...process.env, MOE_PREFIX: shardPrefix, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports-shards'), LOG_LEVEL: 'info', JOB_LOCK_MS: '2000' };
    const redis = createRedis('redis://127.0.0.1:6379');
    const flow = new FlowProducer({ connection: redis, prefix: shardPrefix });
    const procs: ReturnType<typeof startWorkersProcess>[] = [];
    try {
      const a = startWorkersProcess(env);
      procs.push(a);
      await a.started;
      const tickers = benchTickers(80);
      const run = await enqueueRun({ flow, redis, prefix: shardPrefix, runTtlSeconds: 600, shardSize: 20 }, { tickers, source: 'sim', range: { days: 20 }, seed: 4 });
      expect(run.shards).toBe(4);
      // The first shard routes while the others still fetch: stop the process there.
      await a.waitFor('routing started');
      a.child.kill('SIGTERM');
      expect(await a.exited).toBe(0);
      expect(a.lines.map((l) => l.msg).at(-1)).toBe('stopped');
      const meta = await readRunMeta(redis, shardPrefix, run.runId);
      expect(meta?.status).not.toBe('finished');

      const b = startWorkersProcess(env);
      procs.push(b);
      await b.started;
      const watchQ = new Queue(QUEUE_NAMES.report, { connection: redis, prefix: shardPrefix });
      const end = await watchRun({ redis, prefix: shardPrefix, runId: run.runId, reportQueue: watchQ, intervalMs: 100, timeoutMs: 60_000 }).finally(() => watchQ.close());
      expect(end).toMatchObject({ status: 'finished', shards: 4, shardsRouted: 4, routed: 80, failedTickers: 0 });
      const summary = JSON.parse(await readFile(path.join(end.reportDir!, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
      expect(summary.tickers.map((t) => t.ticker)).toEqual(tickers);
      expect(summary.failed).toEqual([]);
    } finally {
      for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
      await Promise.all(procs.map((p) => p.exited));
      await clearPrefix(redis, shardPrefix);
      await flow.close();
      await closeRedis(redis);
    }
  });
});

describe('readable log lines', () => {
  it('turns pino JSON into a short line with extra fields', () => {
    const json = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5), pid: 1, hostname: 'h', name: 'moe', msg: 'fetch failed', jobId: 'j 1', n: 3 });
    expect(prettyLine(json)).toBe('03:04:05 WARN moe: fetch failed jobId="j 1" n=3\n');
    expect(prettyLine('not json')).toBe('not json');
  });
});
