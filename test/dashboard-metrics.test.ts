import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { Histogram, Registry } from 'prom-client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDashboard, type RunningDashboard } from '../src/dashboard/server.js';
import { JobDurationObserver, PAGE_JOBS } from '../src/dashboard/job-durations.js';
import { createLogger } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';

const logger = createLogger({ name: 'dashboard-metrics', level: 'silent' });

interface Family {
  help: string | undefined;
  type: string | undefined;
  samples: { name: string; labels: Record<string, string>; value: number }[];
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
/** A sample value as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case). */
const VALUE_RE = /^(?:[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?inf|nan)$/i;

/** Suffixes a histogram's samples add to its family name. */
const HISTOGRAM_SUFFIXES = ['_bucket', '_sum', '_count'];

/**
 * Parses the Prometheus text format (0.0.4) into families, failing on any line it does not understand and on a
 * sample that belongs to no declared family: the checks a Prometheus server makes when it scrapes.
 */
function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const family = (name: string): Family => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { help: undefined, type: undefined, samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]!);
      if (meta[1] === 'HELP') f.help = meta[3];
      else f.type = meta[3];
      continue;
    }
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`Expected a HELP, TYPE or sample line but received ${JSON.stringify(line)}`);
    const name = m[1]!;
    if (!VALUE_RE.test(m[3]!)) throw new Error(`Expected a number for ${name} but received ${JSON.stringify(m[3])}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(LABEL_RE)].map((l) => [l[1]!, l[2]!]));
    const owner = families.has(name)
      ? name
      : HISTOGRAM_SUFFIXES.map((s) => (name.endsWith(s) ? name.slice(0, -s.length) : '')).find((n) => families.get(n)?.type === 'histogram');
    if (owner === undefined) throw new Error(`Expected a declared family for sample ${name} but received none`);
    families.get(owner)!.samples.push({ name, labels, value: Number(m[3]) });
  }
  return families;
}

function value(families: Map<string, Family>, sampleName: string, labels: Record<string, string>): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name !== sampleName) continue;
      const keys = Object.keys(s.labels);
      if (keys.length === Object.keys(labels).length && keys.every((k) => s.labels[k] === labels[k])) return s.value;
    }
  }
  return undefined;
}

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const QUEUES = [QUEUE_NAMES.fetch, QUEUE_NAMES.route, QUEUE_NAMES.report];

describe('/metrics exposition (prom-client)', () => {
  let p: TestPipeline;
  let dash: RunningDashboard;

  beforeAll(async () => {
    p = await startTestPipeline('dmetrics');
    await p.run({ tickers: ['SPY', 'TLT', 'NOSUCH1'], source: 'sim', range: { days: 30 }, seed: 3 });
    dash = await startDashboard({ prefix: p.config.prefix, reportsDir: p.config.reportsDir, redis: p.redis, logger, port: 0 });
  });

  afterAll(async () => {
    await dash?.close();
    await p?.close();
  });

  const scrape = async (): Promise<Map<string, Family>> => {
    const res = await fetch(`${dash.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    return parseExposition(await res.text());
  };

  it('declares HELP and TYPE for every family, with conventional names and types', async () => {
    const f = await scrape();
    for (const [name, fam] of f) {
      expect(fam.help, name).toMatch(/\S/);
      expect(['gauge', 'counter', 'histogram', 'summary'], name).toContain(fam.type);
      if (fam.type === 'counter') expect(name).toMatch(/_total$/);
    }
    const ours = [...f.keys()].filter((n) => n.startsWith('moe_'));
    expect(ours.sort()).toEqual(
      [
        'moe_job_duration_seconds',
        'moe_job_recent_duration_seconds',
        'moe_job_recent_jobs',
        'moe_job_recent_processing_seconds',
        'moe_queue_jobs',
        'moe_queue_paused',
        'moe_router_backend_info',
        'moe_router_last_run_tokens',
        'moe_router_tokens_per_second',
        'moe_runs',
      ].sort(),
    );
    for (const n of ours) {
      const fam = f.get(n)!;
      expect(fam.type, n).toBe(n === 'moe_job_duration_seconds' ? 'histogram' : 'gauge');
      // A gauge must not look like a counter or a part of a histogram or summary.
      if (fam.type === 'gauge') expect(n).not.toMatch(/_(total|count|sum|bucket)$/);
      for (const s of fam.samples) expect(Number.isNaN(s.value), `${n} ${JSON.stringify(s.labels)}`).toBe(false);
    }
    for (const s of f.get('moe_router_backend_info')!.samples) expect(s.value).toBe(1);
    expect(f.get('moe_router_backend_info')!.samples).toHaveLength(1);
    // The default process metrics of prom-client, in the same registry.
    expect(f.get('process_cpu_seconds_total')?.type).toBe('counter');
    expect(f.get('process_resident_memory_bytes')?.type).toBe('gauge');
    expect(f.get('nodejs_eventloop_lag_seconds')?.type).toBe('gauge');
    // Histogram buckets are cumulative and end at +Inf, which equals _count.
    for (const q of QUEUES) {
      const buckets = f.get('moe_job_duration_seconds')!.samples.filter((s) => s.name === 'moe_job_duration_seconds_bucket' && s.labels.queue === q);
      expect(buckets.at(-1)!.labels.le).toBe('+Inf');
      for (let i = 1; i < buckets.length; i++) expect(buckets[i]!.value).toBeGreaterThanOrEqual(buckets[i - 1]!.value);
      expect(buckets.at(-1)!.value).toBe(value(f, 'moe_job_duration_seconds_count', { queue: q }));
    }
  });

  it('counts each job that completes once in moe_job_duration_seconds, however often it is scraped', async () => {
    const before = await scrape();
    // Jobs that completed before the dashboard watched are the baseline, not observations.
    for (const q of QUEUES) expect(value(before, 'moe_job_duration_seconds_count', { queue: q }), q).toBe(0);
    const completed = (f: Map<string, Family>, q: string) => value(f, 'moe_queue_jobs', { queue: q, state: 'completed' })!;

    await p.run({ tickers: ['GLD', 'UVXY'], source: 'sim', range: { days: 30 }, seed: 5 });
    // The report job completes just after it marks the run finished: wait until BullMQ counts it.
    await expect.poll(async () => completed(await scrape(), QUEUE_NAMES.report), { timeout: 10_000 }).toBe(completed(before, QUEUE_NAMES.report) + 1);

    // Two scrapes at once, then one more: the same jobs, read three times, counted once.
    const [a, b] = await Promise.all([scrape(), scrape()]);
    const after = await scrape();
    for (const q of QUEUES) {
      const delta = completed(after, q) - completed(before, q);
      expect(delta, q).toBe(q === QUEUE_NAMES.fetch ? 2 : 1);
      for (const f of [a, b, after]) expect(value(f, 'moe_job_duration_seconds_count', { queue: q }), q).toBe(delta);
      expect(value(after, 'moe_job_duration_seconds_sum', { queue: q })).toBeGreaterThanOrEqual(0);
      expect(value(after, 'moe_job_duration_seconds_bucket', { queue: q, le: '+Inf' })).toBe(delta);
    }
    expect(value(after, 'moe_runs', { status: 'finished' })).toBe(2);
    expect(value(after, 'moe_job_recent_jobs', { queue: QUEUE_NAMES.route })).toBe(2);
  });
});

describe('JobDurationObserver', () => {
  let redis: Redis;
  let workerRedis: Redis;
  let queue: Queue;
  let worker: Worker | undefined;
  const prefix = `t-djd-${randomUUID().slice(0, 8)}`;
  const name = `durations-${randomUUID().slice(0, 8)}`;

  beforeAll(() => {
    redis = createRedis(REDIS_URL);
    workerRedis = createRedis(REDIS_URL, { role: 'worker' });
    queue = new Queue(name, { connection: redis, prefix });
  });

  afterEach(async () => {
    await worker?.close();
    await queue.obliterate({ force: true });
  });

  afterAll(async () => {
    await queue.close();
    await closeRedis(redis);
    await closeRedis(workerRedis);
  });

  /** Adds `n` jobs and resolves once the worker completed all of them (counted by its events, not by sleeping). */
  async function complete(n: number): Promise<void> {
    const done = new Promise<void>((resolve) => {
      let left = n;
      worker!.on('completed', () => {
        if (--left === 0) resolve();
      });
    });
    await queue.addBulk(Array.from({ length: n }, (_, i) => ({ name: 'j', data: { i } })));
    await done;
  }

  it('observes every job completed between two reads once, even more than a page of them', async () => {
    worker = new Worker(name, async () => 1, { connection: workerRedis, prefix, concurrency: 50 });
    const registry = new Registry();
    const h = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['queue'], registers: [registry] });
    const o = new JobDurationObserver(h);
    const count = async () => (await h.get()).values.find((v) => v.metricName === 'h_seconds_count')?.value ?? 0;
    const read = async () => o.record(queue, await queue.getJobs(['completed'], 0, PAGE_JOBS - 1));

    await complete(5);
    await read();
    expect(await count()).toBe(0);
    const burst = 2 * PAGE_JOBS + 37;
    await complete(burst);
    await read();
    expect(await count()).toBe(burst);
    await read();
    await Promise.all([read(), read()]);
    expect(await count()).toBe(burst);
    await complete(3);
    await read();
    expect(await count()).toBe(burst + 3);
  });
});
