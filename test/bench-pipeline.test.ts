import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { benchTickers, cpuSeconds, main, threadCpu } from '../src/cli/bench-pipeline.js';
import { canonicalTickers } from '../jobs/enqueue-run.js';
import { parseSimTicker } from '../src/data/universe.js';
import { createRedis, closeRedis } from '../jobs/connection.js';
import { initParams, saveModel } from '../src/router/model.js';

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
});
