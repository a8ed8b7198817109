import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DashboardError, startDashboard, type RunningDashboard } from '../src/dashboard/server.js';
import { markdownToHtml, runPage } from '../src/dashboard/html.js';
import { quantile } from '../src/dashboard/metrics.js';
import type { RunView } from '../src/dashboard/runs.js';
import { createLogger } from '../src/log.js';
import { jobIds } from '../jobs/keys.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import { createRunMeta } from '../jobs/run-meta.js';
import type { RunMeta } from '../jobs/run-meta.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';

const logger = createLogger({ name: 'dashboard-test', level: 'silent' });
const TOKEN = 'test-token-0123456789abcdef';

/** Value of one sample line `name{labels} value` of a Prometheus exposition. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const parts = inner.split(',');
    if (want.every((w) => parts.includes(w)) && parts.length === want.length) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('dashboard over a real pipeline', () => {
  let p: TestPipeline;
  let open: RunningDashboard;
  let locked: RunningDashboard;
  let good: { runId: string; meta: RunMeta; summary: RunSummary };
  let bad: { runId: string; meta: RunMeta };

  beforeAll(async () => {
    p = await startTestPipeline('dash');
    const r1 = await p.run({ tickers: ['SPY', 'TLT', 'GLD', 'UVXY', 'NOSUCH1'], source: 'sim', range: { days: 30 }, seed: 4 });
    good = { runId: r1.run.runId, meta: r1.meta, summary: await p.summary(r1.meta) };
    const r2 = await p.run({ tickers: ['NOSUCH2'], source: 'sim', range: { days: 30 } });
    bad = { runId: r2.run.runId, meta: r2.meta };
    const common = { prefix: p.config.prefix, reportsDir: p.config.reportsDir, redis: p.redis, logger, port: 0 };
    open = await startDashboard(common);
    locked = await startDashboard({ ...common, token: TOKEN });
  });

  afterAll(async () => {
    await open?.close();
    await locked?.close();
    await p?.close();
  });

  it('lists finished and failed runs with status, progress, tickers, failures, duration and backend', async () => {
    expect(good.meta.status).toBe('finished');
    expect(bad.meta.status).toBe('failed');
    const runs = (await (await fetch(`${open.url}/api/runs`)).json()) as RunView[];
    expect(runs.map((r) => r.runId)).toEqual([bad.runId, good.runId]);
    const g = runs[1]!;
    expect(g).toMatchObject({ status: 'finished', active: false, progress: 1, routed: 4, failures: 1, backend: good.summary.backend, hasReport: true });
    expect(g.tickers).toEqual(['SPY', 'TLT', 'GLD', 'UVXY', 'NOSUCH1']);
    expect(g.failedTickers).toEqual(good.summary.failed);
    expect(g.durationMs).toBe(Date.parse(good.meta.finishedAt!) - Date.parse(good.meta.createdAt));
    expect(g.meanConfidence).toBeCloseTo(good.summary.routing.meanConfidence, 12);
    expect(g.uncertainTickers).toEqual(good.summary.tickers.filter((t) => t.uncertain).map((t) => ({ ticker: t.ticker, confidence: t.confidence })));
    expect(g.shortTickers).toEqual([]);
    expect(runs[0]).toMatchObject({ status: 'failed', routed: 0, failures: 1 });

    const res = await fetch(`${open.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain(`data-run-id="${good.runId}" data-status="finished"`);
    expect(html).toContain(`data-run-id="${bad.runId}" data-status="failed"`);
    for (const f of [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance]) {
      expect(html).toContain(`src="/runs/${good.runId}/files/${f}"`);
    }
    expect(html).toContain(`<dd>${good.summary.backend}</dd>`);
    expect(html).toContain('no ticker could be routed');
    // Nothing is active: no reload.
    expect(html).not.toContain('http-equiv="refresh"');
  });

  it('reloads the runs page and the run page while a run is active', async () => {
    const runId = randomUUID();
    await createRunMeta({ redis: p.redis, prefix: p.config.prefix, ttlSeconds: 60 }, { runId, source: 'sim', tickers: ['SPY', 'TLT'], createdAt: new Date().toISOString() });
    try {
      const html = await (await fetch(`${open.url}/`)).text();
      expect(html).toContain('<meta http-equiv="refresh" content="3">');
      expect(html).toContain(`data-run-id="${runId}" data-status="queued"`);
      expect(html).toContain('0 of 2 fetched');
      expect(await (await fetch(`${open.url}/runs/${runId}`)).text()).toContain('http-equiv="refresh"');
      expect(await (await fetch(`${open.url}/runs/${good.runId}`)).text()).not.toContain('http-equiv="refresh"');
    } finally {
      await p.redis.del(`${p.config.prefix}:run:${runId}`);
      await p.redis.zrem(`${p.config.prefix}:runs`, runId);
    }
  });

  it('shows one run with its images and summary.md as HTML', async () => {
    const html = await (await fetch(`${open.url}/runs/${good.runId}`)).text();
    expect(html).toContain('<h2>Routing mix and drift</h2>');
    expect(html).toContain('<h2>Failed tickers</h2>');
    expect(html).toMatch(/<td>NOSUCH1<\/td><td>UNKNOWN_TICKER: /);
    expect(html).toContain('<h2>Uncertain routes</h2>');
    expect(html).toContain('<h2>Short tickers</h2>');
    const unsure = good.summary.tickers.filter((t) => t.uncertain);
    if (unsure.length > 0) expect(html).toContain(`<dt>uncertain</dt><dd>${unsure.length}: ${unsure[0]!.ticker} (`);
    else expect(html).toContain('No uncertain tickers.');
    expect(html).toContain(`<img src="/runs/${good.runId}/files/${REPORT_FILES.performance}"`);
  });

  it('serves the six report files and nothing else', async () => {
    const png = await fetch(`${open.url}/runs/${good.runId}/files/${REPORT_FILES.timeSeries}`);
    expect(png.status).toBe(200);
    expect(png.headers.get('content-type')).toBe('image/png');
    const bytes = Buffer.from(await png.arrayBuffer());
    expect(bytes.subarray(1, 4).toString('ascii')).toBe('PNG');
    const json = (await (await fetch(`${open.url}/runs/${good.runId}/files/${REPORT_FILES.summaryJson}`)).json()) as RunSummary;
    expect(json.runId).toBe(good.runId);
    for (const bad of [`/runs/${good.runId}/files/..%2F..%2Fetc%2Fpasswd`, `/runs/${good.runId}/files/router.safetensors`, `/runs/not-a-run/files/summary.md`, `/runs/..%2F/files/summary.md`]) {
      const r = await fetch(`${open.url}${bad}`);
      expect(r.status, bad).toBe(404);
    }
    expect((await fetch(`${open.url}/runs/${randomUUID()}`)).status).toBe(404);
  });

  it('exposes Prometheus metrics: jobs by state per queue, durations, router tokens/s and backend, runs', async () => {
    const res = await fetch(`${open.url}/metrics`);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const text = await res.text();
    // Fetch jobs: 5 + 1, of which the two unknown tickers failed; one route and one report job per run.
    expect(sample(text, 'moe_queue_jobs', { queue: 'moe-fetch', state: 'completed' })).toBe(4);
    expect(sample(text, 'moe_queue_jobs', { queue: 'moe-fetch', state: 'failed' })).toBe(2);
    expect(sample(text, 'moe_queue_jobs', { queue: 'moe-route', state: 'completed' })).toBe(2);
    expect(sample(text, 'moe_queue_jobs', { queue: 'moe-report', state: 'completed' })).toBe(2);
    expect(sample(text, 'moe_queue_jobs', { queue: 'moe-report', state: 'waiting' })).toBe(0);
    for (const q of ['moe-fetch', 'moe-route', 'moe-report']) {
      const p50 = sample(text, 'moe_job_recent_duration_seconds', { queue: q, quantile: '0.5' })!;
      const p99 = sample(text, 'moe_job_recent_duration_seconds', { queue: q, quantile: '0.99' })!;
      expect(p50).toBeGreaterThanOrEqual(0);
      expect(p99).toBeGreaterThanOrEqual(p50);
    }
    expect(sample(text, 'moe_job_recent_jobs', { queue: 'moe-route' })).toBe(2);
    // The newest route job routed nothing (every ticker failed): 0 tokens, so the speed is the good run's.
    const backend = { backend: good.summary.backend };
    expect(sample(text, 'moe_router_backend_info', backend)).toBe(1);
    expect(sample(text, 'moe_router_last_run_tokens', backend)).toBe(0);
    const routeQueue = new Queue(QUEUE_NAMES.route, { connection: p.redis, prefix: p.config.prefix });
    const routeJob = await routeQueue.getJob(jobIds.route(good.runId, 0));
    await routeQueue.close();
    const r = routeJob!.returnvalue as { tokens: number; forwardMs: number };
    expect(r.tokens).toBe(good.summary.tokens);
    expect(sample(text, 'moe_router_tokens_per_second', backend)).toBeCloseTo((r.tokens * 1000) / r.forwardMs, 6);
    expect(sample(text, 'moe_runs', { status: 'finished' })).toBe(1);
    expect(sample(text, 'moe_runs', { status: 'failed' })).toBe(1);
    expect(text).toMatch(/^# TYPE moe_queue_jobs gauge$/m);
  });

  it('puts bull-board at /queues, read-only unless queue actions are configured', async () => {
    const page = await fetch(`${open.url}/queues`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<base href="/queues/"');
    const api = (await (await fetch(`${open.url}/queues/api/queues?activeQueue=moe-fetch&status=completed&page=1`)).json()) as {
      queues: { name: string; readOnlyMode: boolean; allowRetries: boolean }[];
    };
    expect(api.queues.map((q) => q.name).sort()).toEqual(['moe-fetch', 'moe-report', 'moe-route']);
    for (const q of api.queues) expect(q).toMatchObject({ readOnlyMode: true, allowRetries: false });
  });

  it('answers 401 without the token, and accepts the bearer header or the cookie set by ?token=', async () => {
    for (const path of ['/', '/metrics', '/queues', `/runs/${good.runId}/files/${REPORT_FILES.routing}`, '/api/runs']) {
      const r = await fetch(`${locked.url}${path}`);
      expect(r.status, path).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="moe-dashboard"');
    }
    expect((await fetch(`${locked.url}/`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
    expect((await fetch(`${locked.url}/?token=wrong`, { redirect: 'manual' })).status).toBe(401);
    expect((await fetch(`${locked.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);

    const link = await fetch(`${locked.url}/runs/${good.runId}?token=${TOKEN}`, { redirect: 'manual' });
    expect(link.status).toBe(303);
    expect(link.headers.get('location')).toBe(`/runs/${good.runId}`);
    const cookie = link.headers.get('set-cookie')!;
    expect(cookie).toMatch(/^moe_dashboard_token=.+; Path=\/; HttpOnly; SameSite=Strict$/);
    const withCookie = await fetch(`${locked.url}/runs/${good.runId}`, { headers: { cookie: cookie.split(';')[0]! } });
    expect(withCookie.status).toBe(200);
  });
});

describe('dashboard options', () => {
  const base = { prefix: 'unused', reportsDir: '/nonexistent', logger, port: 0 };
  // No connection is made before the options are checked; the Redis handle is never used.
  const redis = {} as never;

  it('refuses a non-loopback host without a token, naming the host', async () => {
    const err = await startDashboard({ ...base, redis, host: '0.0.0.0' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DashboardError);
    expect((err as DashboardError).code).toBe('TOKEN_REQUIRED');
    expect((err as DashboardError).message).toContain('Expected a DASHBOARD_TOKEN because host "0.0.0.0" is not loopback but received nothing');
  });

  it('refuses short tokens and bad ports with the value received', async () => {
    await expect(startDashboard({ ...base, redis, token: 'short' })).rejects.toThrow('Expected at least 16 characters for token but received 5');
    await expect(startDashboard({ ...base, redis, port: 70_000 })).rejects.toThrow('Expected integer in 0..65535 for port but received 70000');
  });
});

describe('summary.md as HTML', () => {
  it('renders headings, tables, lists, code and bold, escaping everything else', () => {
    const html = markdownToHtml(
      ['# Routing report', '', 'Source `sim`, **stable**.', '', '| ticker | reason |', '| --- | --- |', '| B\\|B | <script>alert(1)</script> |', '', '- one', '- two', '  - not a list'].join('\n'),
    );
    expect(html).toContain('<h1>Routing report</h1>');
    expect(html).toContain('<p>Source <code>sim</code>, <strong>stable</strong>.</p>');
    expect(html).toContain('<tr><th>ticker</th><th>reason</th></tr>');
    expect(html).toContain('<tr><td>B|B</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr>');
    expect(html).toContain('<ul>\n<li>one</li>\n<li>two</li>\n</ul>');
    expect(html).toContain('<p>  - not a list</p>');
    expect(html).not.toContain('<script>');
  });

  it('names uncertain and short tickers on the run card, above the summary.md sections', () => {
    const view: RunView = {
      runId: randomUUID(),
      status: 'finished',
      active: false,
      source: 'csv',
      tickers: ['AAA', 'BBB'],
      tickerCount: 2,
      fetchedDone: 2,
      progress: 1,
      shards: 1,
      shardsRouted: 1,
      routed: 2,
      failures: 0,
      failedTickers: [],
      createdAt: '2026-11-20T21:00:00Z',
      finishedAt: '2026-11-20T21:00:03Z',
      durationMs: 3000,
      backend: 'scalar',
      error: undefined,
      hasReport: false,
      drift: undefined,
      meanConfidence: 0.7,
      uncertainTickers: [{ ticker: 'AAA', confidence: 0.412 }],
      shortTickers: [{ ticker: 'BBB', days: 45, requestedDays: 250 }],
    };
    const html = runPage(view, '## Short tickers\n\n| ticker | routed / requested days |\n| --- | ---: |\n| BBB | 45 / 250 |\n');
    expect(html).toContain('<dt>uncertain</dt><dd>1: AAA (0.41)</dd>');
    expect(html).toContain('<dt>short</dt><dd>1: BBB (45/250 days)</dd>');
    expect(html).toContain('<tr><td>BBB</td><td>45 / 250</td></tr>');
  });

  it('interpolates quantiles linearly', () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([5], 0.99)).toBe(5);
    expect(quantile([], 0.5)).toBeNaN();
  });
});
