import { DOMAINS, NUM_DOMAINS, type Domain } from '../domains.js';
import { Rng } from '../util/random.js';
import { compareRuns, routingMix, universeId, type UniverseRunRecord } from './drift.js';
import type { ReportInput, TickerSeries, TickerSummary } from './types.js';

export interface SampleInputOptions {
  seed: number;
  /** Routed tickers. @defaultValue 12 */
  tickers?: number;
  /** Days per ticker. @defaultValue 60 */
  days?: number;
  /** Asset classes cycled over the tickers; `undefined` entries make tickers of unknown class. @defaultValue first three domains */
  classes?: (Domain | undefined)[];
  /** Tickers that failed, with reasons. @defaultValue none */
  failed?: { ticker: string; reason: string }[];
  /** Last day, `YYYY-MM-DD`. @defaultValue 2026-11-20 */
  end?: string;
  /** Previous run of the same universe, to fill the drift block. @defaultValue none (drift is null) */
  previous?: UniverseRunRecord;
}

/** Typical daily volatility per class, so the charts show realistic separation. */
const CLASS_VOL: Record<Domain, number> = { Equities: 0.014, 'Fixed Income': 0.005, Commodities: 0.016, Derivatives: 0.035 };

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function argmax(v: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if ((v[i] ?? 0) > (v[best] ?? 0)) best = i;
  return best;
}

/**
 * A seeded, self-consistent report input (summaries agree with the per-day series) for tests, benchmarks and
 * previews of the report layout without running the pipeline.
 */
export function sampleReportInput(opts: SampleInputOptions): ReportInput {
  const n = opts.tickers ?? 12;
  const days = opts.days ?? 60;
  const classes = opts.classes ?? ['Equities', 'Fixed Income', 'Commodities'];
  const endDay = Math.floor(Date.parse(`${opts.end ?? '2026-11-20'}T00:00:00Z`) / 86_400_000);
  const tickers: TickerSummary[] = [];
  const series: TickerSeries[] = [];
  for (let k = 0; k < n; k++) {
    const cls = classes[k % Math.max(1, classes.length)];
    const ticker = `${(cls ?? 'Unknown').slice(0, 2).toUpperCase()}${String(k).padStart(3, '0')}`;
    const rng = Rng.derive(opts.seed, ticker);
    const c = cls === undefined ? rng.int(NUM_DOMAINS) : DOMAINS.indexOf(cls);
    // Some tickers lean to another domain, as real routers do on real data.
    const lean = rng.next() < 0.25 ? rng.int(NUM_DOMAINS) : c;
    const baseVol = (cls ? CLASS_VOL[cls] : 0.012) * rng.uniform(0.6, 1.6);
    const drift = rng.normal() * 0.0015;
    const s: TickerSeries = {
      ticker,
      ...(cls ? { class: cls } : {}),
      dates: new Int32Array(days),
      vol: new Float32Array(days),
      ret: new Float32Array(days),
      confidence: new Float32Array(days),
      assign: new Uint8Array(days),
    };
    const probSum = new Array<number>(NUM_DOMAINS).fill(0);
    const domainDays: [number, number, number, number] = [0, 0, 0, 0];
    let vol = baseVol;
    let total = 0;
    for (let t = 0; t < days; t++) {
      // Business days only, counted back from the end.
      let day = endDay - Math.floor(((days - 1 - t) * 7) / 5);
      if (((day + 4) % 7 + 7) % 7 >= 5) day -= 2;
      vol = Math.max(0.0005, vol + 0.15 * (baseVol - vol) + 0.08 * baseVol * rng.normal());
      const r = drift + vol * rng.normal();
      const probs = softmax(DOMAINS.map((_, d) => (d === lean ? 2.2 : 0) + (d === c ? 0.8 : 0) + rng.normal() * 0.8));
      const a = argmax(probs);
      s.dates[t] = day;
      s.vol[t] = vol;
      s.ret[t] = r;
      s.assign[t] = a;
      s.confidence[t] = probs[a] ?? 0;
      probs.forEach((p, d) => (probSum[d] = (probSum[d] ?? 0) + p));
      domainDays[a] = (domainDays[a] ?? 0) + 1;
      total += r;
    }
    const chosen = argmax(domainDays);
    const probs = probSum.map((p) => p / days) as [number, number, number, number];
    tickers.push({
      ticker,
      ...(cls ? { class: cls, subtype: 'sample' } : {}),
      domain: DOMAINS[chosen] ?? 'Equities',
      probs,
      confidence: probs[chosen] ?? 0,
      days,
      domainDays,
      totalReturn: total,
      meanVol: s.vol.reduce((a, b) => a + b, 0) / Math.max(1, days),
      firstDate: new Date((s.dates[0] ?? 0) * 86_400_000).toISOString().slice(0, 10),
      lastDate: new Date((s.dates[days - 1] ?? 0) * 86_400_000).toISOString().slice(0, 10),
    });
    series.push(s);
  }
  const failed = opts.failed ?? [];
  const universe = universeId('sim', [...tickers.map((t) => t.ticker), ...failed.map((f) => f.ticker)]);
  return {
    summary: {
      runId: `sample-${opts.seed}`,
      source: 'sim',
      createdAt: '2026-11-20T21:00:00.000Z',
      finishedAt: '2026-11-20T21:00:04.000Z',
      tickers,
      failed,
      backend: 'scalar',
      model: { path: 'models/router.safetensors', hidden: 16, featureSpec: 'v3' },
      timings: { fetchMs: 1200, routeMs: 35, reportMs: 0, totalMs: 2100 },
      tokens: n * days,
      universe,
      routing: routingMix(tickers),
      drift: opts.previous ? compareRuns(universe, tickers, opts.previous) : null,
    },
    series,
  };
}
