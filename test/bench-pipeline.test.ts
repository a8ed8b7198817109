import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { benchTickers, cpuSeconds, main, sweepCounts, sweepEfficiency, threadCpu } from '../src/cli/bench-pipeline.js';
import { canonicalTickers } from '../jobs/enqueue-run.js';
import { parseSimTicker } from '../src/data/universe.js';
import { createRedis, closeRedis } from '../jobs/connection.js';
import { initParams, saveModel } from '../src/router/model.js';
import { profileBuckets, queueShare, type CpuProfile } from '../src/util/cpu-profile.js';

let tmp: string;
const saved = process.env.MOE_MODEL;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-benchp-'));
  const modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 9), temperature: 1 });
  process.env.MOE_MODEL = modelPath;
});

afterAll(async () => {
  if (saved === undefined) delete process.env.MOE_MODEL;
  else process.env.MOE_MODEL = saved;
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('bench:pipeline', () => {
  it('makes distinct, valid simulated tickers over every domain', () => {
    const t = benchTickers(10_000);
    expect(canonicalTickers(t)).toHaveLength(10_000);
    const classes = new Set(t.slice(0, 40).map((x) => parseSimTicker(x)?.class));
    expect(classes.size).toBe(4);
  });

  it('refuses bad usage with exit status 2', async () => {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      expect(await main([], () => undefined)).toBe(2);
      expect(await main(['--tickers', '100001'], () => undefined)).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(errors[0]).toContain('Expected --tickers N but received nothing');
    expect(errors[1]).toContain('Expected integer in 1..100000 for --tickers but received "100001"');
  });

  it('reads the sweep counts and refuses bad ones or a sweep with --fetch-procs', async () => {
    expect(sweepCounts('1,2, 4,8,12,2')).toEqual([1, 2, 4, 8, 12]);
    for (const bad of ['', '1,,2', '0', '1,65', 'two']) {
      expect(() => sweepCounts(bad)).toThrow(`Expected a comma-separated list of integers in 1..64 for --sweep-fetch-procs but received ${JSON.stringify(bad)}`);
    }
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      expect(await main(['--tickers', '5', '--sweep-fetch-procs', '1,2', '--fetch-procs', '2'], () => undefined)).toBe(2);
      expect(await main(['--tickers', '5', '--route-procs', '0'], () => undefined)).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(errors[0]).toContain('Expected either --fetch-procs or --sweep-fetch-procs but received both ("2" and "1,2")');
    expect(errors[1]).toContain('Expected integer in 1..64 for --route-procs but received "0"');
  });

  it('rates each sweep row per fetch process and per feature thread against one process, or the first count without it', () => {
    const row = (fetchProcs: number, tickersPerSecond: number, featureThreads = fetchProcs, cpuSeconds = 1) => ({
      fetchProcs,
      featureThreads,
      seconds: 1,
      tickersPerSecond,
      fetchStageSeconds: 1,
      cpuSeconds,
      redisPeakMB: 1,
      peakRssMB: {},
    });
    expect(sweepEfficiency([row(2, 300), row(1, 200), row(4, 400)], 16).map((r) => r.efficiency)).toEqual([0.75, 1, 0.5]);
    expect(sweepEfficiency([row(2, 300), row(4, 450)], 16).map((r) => r.efficiency)).toEqual([1, 0.75]);
    // 16 cores: one process takes 4 threads, 8 processes 2 each; twice the rate on four times the threads.
    const r = sweepEfficiency([row(1, 1000, 4, 5), row(8, 2000, 16, 12)], 16);
    expect(r.map((x) => x.efficiency)).toEqual([1, 0.25]);
    expect(r.map((x) => x.threadEfficiency)).toEqual([1, 0.5]);
    // One process: 5 ms of CPU a ticker, so 16 cores allow at most 3,200 tickers/s (3.2× its rate); eight: 6 ms,
    // 2,667 tickers/s, 0.33 of eight times one process's rate, whatever the queue does.
    expect(r.map((x) => x.cpuCeiling)).toEqual([3.2, 0.33]);
  });

  it('reads a process CPU time from /proc and says NaN where it cannot', () => {
    const own = cpuSeconds(process.pid);
    expect(own).toBeGreaterThan(0);
    const used = process.cpuUsage();
    // /proc counts in 10 ms ticks; cpuUsage in microseconds, read a moment later.
    expect(Math.abs(own - (used.user + used.system) / 1e6)).toBeLessThan(0.5);
    expect(cpuSeconds(undefined)).toBeNaN();
    expect(cpuSeconds(2 ** 30)).toBeNaN();
  });

  it('reads each thread of a process (name, user and system seconds, page faults) and nothing for a gone one', () => {
    const threads = threadCpu(process.pid);
    // The main thread's id is the process id; its times can only have grown since the process started.
    const own = threads.get(process.pid);
    expect(own).toBeDefined();
    expect(own!.name.length).toBeGreaterThan(0);
    expect(own!.user + own!.system).toBeGreaterThan(0);
    expect(own!.faults).toBeGreaterThan(0);
    const total = [...threads.values()].reduce((a, t) => a + t.user + t.system, 0);
    expect(total).toBeLessThanOrEqual(cpuSeconds(process.pid) + 0.05);
    expect(threadCpu(2 ** 30).size).toBe(0);
    expect(threadCpu(undefined).size).toBe(0);
  });

  it('runs a small real and bare flow in worker processes and ends with the JSON line, leaving no keys', async () => {
    const lines: string[] = [];
    expect(await main(['--tickers', '12', '--days', '20', '--json', '--threads'], (l) => lines.push(l))).toBe(0);
    // --threads: one line per real worker process, naming its busiest threads.
    expect(lines.filter((l) => /^ {2}threads (fetch|route|report): /.test(l))).toHaveLength(3);
    const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    expect(last.tickers).toBe(12);
    expect(last.seconds).toBeGreaterThan(0);
    expect(last.bareSeconds).toBeGreaterThan(0);
    const ratio = (last.seconds as number) / (last.bareSeconds as number);
    // Both times are rounded to milliseconds before the ratio is taken from the unrounded ones.
    expect(Math.abs((last.ratio as number) - ratio) / ratio).toBeLessThan(0.03);
    expect(Object.keys(last.workerPeakRssMB as object).sort()).toEqual(['fetch', 'report', 'route']);
    for (const v of Object.values(last.workerPeakRssMB as Record<string, number>)) expect(v).toBeGreaterThan(20);
    // CPU time of every process: the real workers do work, the bare ones next to none; Redis runs here.
    const cpu = last.cpuSeconds as Record<string, number>;
    const bareCpu = last.bareCpuSeconds as Record<string, number>;
    expect(Object.keys(cpu).sort()).toEqual(['bench', 'fetch', 'redis', 'report', 'route']);
    expect(Object.keys(bareCpu).sort()).toEqual(['bench', 'fetch', 'redis', 'report', 'route']);
    expect(cpu.report).toBeGreaterThan(bareCpu.report!);
    expect(cpu.fetch! + cpu.route! + cpu.report!).toBeGreaterThan(0);
    expect(last.stagesMs).toMatchObject({ fetchMs: expect.any(Number), routeMs: expect.any(Number), reportMs: expect.any(Number) });
    // The run's timeline after its fetch stage, from its jobs' timestamps and the report worker's log, in order.
    const tail = last.tailMs as Record<string, number> & { phases: Record<string, number>; shardsAhead: number };
    const order = ['enqueued', 'lastFetchDone', 'lastRouteStart', 'lastRouteDone', 'reportStart', 'reportDone', 'seen'].map((k) => tail[k]!);
    for (const v of order) expect(v).toBeGreaterThanOrEqual(0);
    for (let i = 2; i < order.length; i++) expect(order[i]!).toBeGreaterThanOrEqual(order[i - 1]!);
    expect(tail.afterFetch).toBe(tail.seen! - tail.lastFetchDone!);
    expect(Object.keys(tail.phases)).toEqual(['enter', 'tickers', 'merge', 'previous', 'render', 'summaries', 'finish']);
    expect(tail.shardsAhead).toBeGreaterThanOrEqual(0);
    expect(tail.shardsAhead).toBeLessThanOrEqual(1);
    expect(lines.some((l) => /^ {2}tail \(last run, ms from enqueue\): enqueued \d+, last fetch done \d+, .* ms after the fetch stage; report phases /.test(l))).toBe(true);
    // Orchestration CPU of both flows per ticker, and their ratio.
    for (const o of [last.orchestration, last.bareOrchestration] as { cpuSeconds: number; msPerTicker: number; parts: Record<string, number> }[]) {
      expect(o.msPerTicker).toBeGreaterThan(0);
      expect(Object.keys(o.parts).sort()).toEqual(['bench', 'redis', 'workerMain']);
    }
    expect(last.orchestrationRatio).toBeGreaterThan(0);
    expect(lines.some((l) => /^ {2}ratio \d+\.\d+× the bare flow$/.test(l))).toBe(true);
    expect(last.prefix).toMatch(/^bench-[0-9a-f]{8}$/);
    const redis = createRedis('redis://127.0.0.1:6379');
    try {
      const left: string[] = [];
      for await (const keys of redis.scanStream({ match: `${String(last.prefix)}:*`, count: 1000 })) left.push(...(keys as string[]));
      expect(left).toEqual([]);
    } finally {
      await closeRedis(redis);
    }
  });

  it('charges each profile sample to the innermost BullMQ, ioredis, piscina or own frame on its stack, within a window', () => {
    const frame = (id: number, functionName: string, url: string, children: number[] = []) => ({ id, callFrame: { functionName, url }, children });
    const profile: CpuProfile = {
      nodes: [
        frame(1, '(root)', '', [2, 3, 7, 10, 11, 12]),
        frame(2, '(program)', ''),
        frame(3, 'moveToFinished', 'file:///app/node_modules/bullmq/dist/esm/classes/job.js', [4, 6]),
        frame(4, 'sendCommand', 'file:///app/node_modules/ioredis/built/Redis.js', [5]),
        frame(5, 'writeBuffer', ''), // a native write under ioredis
        frame(6, 'pack', 'file:///app/node_modules/msgpackr/pack.js'), // BullMQ's own dependency
        frame(7, 'processor', 'file:///app/workers/report.ts', [8]),
        frame(8, 'draw', 'file:///app/node_modules/chart.js/dist/chart.js', [9]), // the project's drawing
        frame(9, 'postTask', 'file:///app/node_modules/piscina/dist/index.js'),
        frame(10, '(garbage collector)', ''),
        frame(11, '(idle)', ''),
        frame(12, 'listOnTimeout', 'node:internal/timers'),
      ],
      startTime: 1_000,
      endTime: 2_000,
      // Samples at 1000, 1100, …: each stands for the 100 µs to the next.
      samples: [5, 6, 8, 9, 7, 10, 11, 12, 2, 5, 5],
      timeDeltas: [0, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100],
    };
    const b = profileBuckets(profile, '/app/');
    expect(b).toEqual({ bullmq: 100, ioredis: 200, piscina: 100, own: 200, node: 100, gc: 100, program: 100, idle: 100 });
    // BullMQ and ioredis over the samples that can be told apart (GC, program and idle left out).
    expect(queueShare(b)).toBeCloseTo(300 / 700, 12);
    // Only the samples in [1200, 1500]: chart.js, piscina, the processor, GC.
    expect(profileBuckets(profile, '/app/', { fromUs: 1_200, toUs: 1_500 })).toMatchObject({ own: 200, piscina: 100, gc: 100, ioredis: 0, bullmq: 0 });
    expect(queueShare(profileBuckets(profile, '/app/', { fromUs: 1_500, toUs: 1_650 }))).toBeNaN();
  });

  it('attributes the orchestration of both flows to BullMQ and ioredis by profiling the worker processes', async () => {
    const lines: string[] = [];
    expect(await main(['--tickers', '12', '--days', '20', '--attribute', '--json'], (l) => lines.push(l))).toBe(0);
    const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    type A = { msPerTicker: number; parts: Record<string, number>; mains: { role: string; cpuSeconds: number; shares: Record<string, number> }[] };
    for (const a of [last.attributedOrchestration, last.bareAttributedOrchestration] as A[]) {
      expect(a.msPerTicker).toBeGreaterThan(0);
      expect(Object.keys(a.parts).sort()).toEqual(['bench', 'queueMain', 'redis']);
      expect(a.mains.map((m) => m.role).sort()).toEqual(['fetch', 'report', 'route']);
      for (const m of a.mains) {
        const sum = Object.values(m.shares).reduce((x, y) => x + y, 0);
        if (sum > 0) expect(sum).toBeCloseTo(1, 2);
      }
    }
    // The real workers' main threads run the project's own code (the fetch processor, decoding and aggregating shards,
    // merging and summaries). Summed over the three roles: 12 tickers give one role a few milliseconds of it, which a
    // profile sampling every millisecond can miss when the machine is busy.
    const real = last.attributedOrchestration as A;
    expect(real.mains.reduce((sum, m) => sum + (m.shares.own ?? 0), 0)).toBeGreaterThan(0);
    expect(last.attributedRatio).toBeGreaterThan(0);
    // The bound from whole main threads is never below the part of them that is BullMQ and ioredis.
    expect((last.orchestration as { msPerTicker: number }).msPerTicker).toBeGreaterThanOrEqual(real.msPerTicker - 0.001);
    expect(lines.some((l) => /^ {2}ratio \d+\.\d+× the bare flow$/.test(l))).toBe(true);

    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      expect(await main(['--tickers', '5', '--attribute', '--sweep-fetch-procs', '1,2'], () => undefined)).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(errors[0]).toContain('Expected --attribute without --sweep-fetch-procs but received both');
  });

  it('starts several route and report processes', async () => {
    const lines: string[] = [];
    expect(await main(['--tickers', '8', '--days', '20', '--fetch-procs', '2', '--route-procs', '2', '--report-procs', '2', '--json'], (l) => lines.push(l))).toBe(0);
    const last = JSON.parse(lines.at(-1)!) as Record<string, unknown>;
    expect([last.fetchProcs, last.routeProcs, last.reportProcs]).toEqual([2, 2, 2]);
    // Two fetch processes share the host's CPUs (MOE_HOST_PROCS=2): ⌊CPUs / 2⌋ feature threads each, at least one.
    expect(last.featureThreads).toBe(Math.max(1, Math.min(4, Math.floor(os.availableParallelism() / 2))));
    expect(Object.keys(last.workerPeakRssMB as object).sort()).toEqual(['fetch0', 'fetch1', 'report4', 'report5', 'route2', 'route3']);
    expect(Object.keys(last.bareCpuSeconds as object).sort()).toEqual(['bench', 'fetch0', 'fetch1', 'redis', 'report4', 'report5', 'route2', 'route3']);
    // Each run starts its worker processes (six here, each loading the TypeScript sources): on a loaded 2-core machine
    // that alone can take most of a minute.
  }, 150_000);

  it('sweeps fetch process counts, one row each with its efficiency and CPU ceiling', async () => {
    const sweepLines: string[] = [];
    expect(await main(['--tickers', '6', '--days', '20', '--sweep-fetch-procs', '1,2', '--json'], (l) => sweepLines.push(l))).toBe(0);
    expect(sweepLines.filter((l) => /^ +[12] \| /.test(l))).toHaveLength(2);
    expect(sweepLines.some((l) => l.endsWith('| efficiency | per thread | CPU ceiling'))).toBe(true);
    const sweep = (JSON.parse(sweepLines.at(-1)!) as { sweep: (Record<string, number> & { peakRssMB: Record<string, number> })[] }).sweep;
    expect(sweep.map((r) => r.fetchProcs)).toEqual([1, 2]);
    expect(sweep[0]!.efficiency).toBe(1);
    expect(sweep[0]!.threadEfficiency).toBe(1);
    for (const r of sweep) {
      expect(r.featureThreads).toBe(r.fetchProcs! * Math.max(1, Math.min(4, Math.floor(os.availableParallelism() / r.fetchProcs!))));
      expect(Object.keys(r.peakRssMB).sort()).toEqual(['fetch', 'report', 'route']);
      for (const v of Object.values(r.peakRssMB)) expect(v).toBeGreaterThan(20);
      expect(r.redisPeakMB).toBeGreaterThanOrEqual(0);
      expect(r.seconds).toBeGreaterThan(0);
      expect(r.tickersPerSecond).toBeGreaterThan(0);
      expect(r.fetchStageSeconds).toBeGreaterThanOrEqual(0);
      expect(r.cpuSeconds).toBeGreaterThan(0);
      expect(r.efficiency).toBeGreaterThan(0);
      expect(r.cpuCeiling).toBeGreaterThan(0);
    }
  }, 150_000);
});
