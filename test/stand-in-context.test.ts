import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../src/domains.js';
import { daysToIso } from '../src/data/dates.js';
import { CONTEXT_SET, NO_CONTEXT, type ContextSeries } from '../src/data/features/context.js';
import { MedianSeries, STAND_IN_MIN_MEMBERS, annualisedVolatility, scaleSeries, scaleToVolatility, spanShare, spliceContext, standInContext } from '../src/data/features/stand-in.js';
import type { Bar } from '../src/data/types.js';
import { evaluateDirectory } from '../src/training/evaluate.js';
import { Rng } from '../src/util/random.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const marketData = path.resolve(repoRoot, '../shared/market-data');
const haveMarketData = existsSync(path.join(marketData, 'labels.csv'));

const FIRST_DAY = 18_000; // 2019-04-14

/** Bars from daily log returns, one a calendar day from FIRST_DAY + offset (the first bar has no return). */
function barsOf(returns: readonly number[], offset = 0): Bar[] {
  let level = 100;
  const bars: Bar[] = [];
  for (let i = 0; i <= returns.length; i++) {
    if (i > 0) level *= Math.exp(returns[i - 1]!);
    bars.push({ date: daysToIso(FIRST_DAY + offset + i), open: level, high: level, low: level, close: level, adjClose: level, volume: 1000 });
  }
  return bars;
}

/** Returns of a context series on each of its dates after the first, by day number. */
function returnsByDay(s: ContextSeries): Map<number, number> {
  const out = new Map<number, number>();
  for (let i = 1; i < s.dates.length; i++) out.set(s.dates[i]!, s.logClose[i]! - s.logClose[i - 1]!);
  return out;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 === 1 ? s[(n - 1) / 2]! : 0.5 * (s[n / 2 - 1]! + s[n / 2]!);
};

describe('stand-in context', () => {
  const rng = new Rng(7);
  const members = Array.from({ length: 7 }, (_, m) => ({ ticker: `M${m}`, returns: Array.from({ length: 40 }, () => 0.01 * rng.normal()) }));
  // M6 starts 30 days late: the first 30 days have six members, the rest seven.
  const group = members.map(({ ticker, returns }, m) => ({ ticker, bars: m === 6 ? barsOf(returns.slice(30), 30) : barsOf(returns) }));

  it('is the median daily return of the group, with or without one member, on the days enough of them have one', () => {
    const ms = new MedianSeries('SPY~', group);
    const all = returnsByDay(ms.series()!);
    expect(all.size).toBe(40);
    for (let i = 0; i < 40; i++) {
      const day = FIRST_DAY + i + 1;
      const those = members.filter((_, m) => m < 6 || i >= 30).map((x) => x.returns[i]!);
      expect(all.get(day)).toBeCloseTo(median(those), 12);
    }
    // Without M0: six members on the last ten days, five before: still at least STAND_IN_MIN_MEMBERS.
    expect(STAND_IN_MIN_MEMBERS).toBe(3);
    const without = returnsByDay(ms.series('M0')!);
    for (let i = 0; i < 40; i++) {
      const those = members.filter((_, m) => m > 0 && (m < 6 || i >= 30)).map((x) => x.returns[i]!);
      expect(without.get(FIRST_DAY + i + 1)).toBeCloseTo(median(those), 12);
    }
    // With six needed, the first 30 days (six members, five without M0) drop out of the series without M0.
    const six = new MedianSeries('SPY~', group, 6);
    expect(returnsByDay(six.series()!).size).toBe(40);
    expect([...returnsByDay(six.series('M0')!).keys()]).toEqual(Array.from({ length: 10 }, (_, i) => FIRST_DAY + 31 + i));
    expect(six.has('M6')).toBe(true);
    expect(six.has('SPY')).toBe(false);
    // Three members make a series; two do not.
    expect(returnsByDay(new MedianSeries('SPY~', group.slice(0, 3)).series()!).size).toBe(40);
    expect(new MedianSeries('SPY~', group.slice(0, 2)).series()).toBeNull();
    expect(() => new MedianSeries('SPY~', group, 0)).toThrow('Expected integer ≥ 1 for minMembers of stand-in SPY~ but received 0');
  });

  it('fills the days before and after a reference series with the stand-in returns, and keeps the real ones between', () => {
    const standIn = new MedianSeries('IEF~', group).series()!;
    const realBars = barsOf(Array.from({ length: 10 }, () => 0.003), 12); // days 12 … 22
    const real: ContextSeries = { ticker: 'IEF', dates: Int32Array.from(realBars, (_, i) => FIRST_DAY + 12 + i), logClose: Float64Array.from(realBars, (b) => Math.log(b.adjClose)) };
    const out = spliceContext(real, standIn);
    expect(out.ticker).toBe('IEF');
    expect([...out.dates]).toEqual([...standIn.dates]);
    const got = returnsByDay(out);
    const want = returnsByDay(standIn);
    for (const [day, r] of got) {
      if (day > FIRST_DAY + 12 && day <= FIRST_DAY + 22) expect(r).toBeCloseTo(0.003, 12);
      else expect(r).toBeCloseTo(want.get(day)!, 12);
    }
    // The real levels themselves are kept.
    expect(out.logClose[12]).toBe(real.logClose[0]);
    expect(spliceContext(null, standIn)).toBe(standIn);
    const days = Int32Array.from({ length: 41 }, (_, i) => FIRST_DAY + i);
    expect(spanShare(real, days)).toBeCloseTo(11 / 41, 12);
    expect(spanShare(null, days)).toBe(0);
  });

  it('stands in only for the broad members that lack days, from the instruments routed to their domain, each ticker left out of its own', () => {
    const eq = DOMAINS.indexOf('Equities');
    const fi = DOMAINS.indexOf('Fixed Income');
    // Seven equities, five bond funds that move (2 %/day would be far more than 3 % a year) and one cash-like fund.
    const bonds = Array.from({ length: 5 }, (_, m) => ({ ticker: `B${m}`, bars: barsOf(Array.from({ length: 40 }, () => 0.004 * rng.normal())) }));
    const cash = { ticker: 'CASH', bars: barsOf(Array.from({ length: 40 }, () => 0.00005)) };
    expect(annualisedVolatility(cash.bars)).toBeLessThan(0.03);
    const loaded = [...group, ...bonds, cash];
    const routed = new Map<string, number>([...group.map((g) => [g.ticker, eq] as const), ...[...bonds, cash].map((b) => [b.ticker, fi] as const)]);
    const plan = standInContext(loaded, NO_CONTEXT, routed)!;
    expect(Object.keys(plan.notes)).toEqual(['SPY', 'IEF']);
    expect(plan.notes.SPY).toBe('stand-in: median daily return of 7 instruments (routed Equities), every day');
    expect(plan.notes.IEF).toBe('stand-in: median daily return of 5 instruments (routed Fixed Income, at least 3 % a year, moves × 1.3), every day');
    const at = (name: string) => CONTEXT_SET.findIndex((c) => c.name === name);
    const forCash = plan.contextFor('CASH');
    const forM0 = plan.contextFor('M0');
    expect(forCash[at('gold')]).toBeNull();
    expect(forCash[at('commodity')]).toBeNull();
    // CASH is in no group: the shared stand-ins. M0's equity stand-in leaves M0 out (so differs), its rates one is shared.
    expect(forM0[at('rates')]).toBe(forCash[at('rates')]);
    expect(forM0[at('equity')]).not.toBe(forCash[at('equity')]);
    const eqShared = returnsByDay(forCash[at('equity')]!);
    const eqOwn = returnsByDay(forM0[at('equity')]!);
    expect(eqOwn.get(FIRST_DAY + 1)).toBeCloseTo(median(members.slice(1, 6).map((x) => x.returns[0]!)), 12);
    expect(eqShared.get(FIRST_DAY + 1)).toBeCloseTo(median(members.slice(0, 6).map((x) => x.returns[0]!)), 12);
    // The rates median is scaled as an aggregate bond fund is among IEF's stand-ins (1.3×); CASH, under 3 % a year, is no member.
    const firstReturn = (bars: readonly Bar[]): number => Math.log(bars[1]!.adjClose / bars[0]!.adjClose);
    expect(returnsByDay(forCash[at('rates')]!).get(FIRST_DAY + 1)).toBeCloseTo(1.3 * median(bonds.map((b) => firstReturn(b.bars))), 12);
    // A folder whose series span its days needs none; nor does one whose members were all left out.
    const whole = CONTEXT_SET.map((_, k) => ({ ticker: `R${k}`, dates: Int32Array.from({ length: 41 }, (_, i) => FIRST_DAY + i), logClose: new Float64Array(41) }));
    expect(standInContext(loaded, whole, routed)).toBeUndefined();
    expect(standInContext(loaded, NO_CONTEXT, routed, () => false)).toBeUndefined();
  });

  it('scales the commodity median to its members\' median volatility, each ticker\'s own by the same factor', () => {
    const co = DOMAINS.indexOf('Commodities');
    // Independent commodities of 1–3 %/day: their median moves far less than any of them.
    const funds = Array.from({ length: 7 }, (_, m) => ({ ticker: `C${m}`, bars: barsOf(Array.from({ length: 200 }, () => (0.01 + 0.003 * m) * rng.normal())) }));
    const routed = new Map(funds.map((f) => [f.ticker, co]));
    const plan = standInContext(funds, NO_CONTEXT, routed)!;
    expect(Object.keys(plan.notes)).toEqual(['DBC']);
    expect(plan.notes.DBC).toBe('stand-in: median daily return of 7 instruments (routed Commodities, scaled to their median volatility), every day');
    const at = CONTEXT_SET.findIndex((c) => c.name === 'commodity');
    const vols = funds.map((f) => annualisedVolatility(f.bars)).sort((a, b) => a - b);
    const volOf = (c: ContextSeries): number => scaleToVolatility(c, 1) ** -1;
    // A stranger to the group (no member of it) gets the shared series.
    const shared = plan.contextFor('ELSEWHERE')[at]!;
    expect(volOf(shared)).toBeCloseTo(vols[3]!, 10);
    const unscaled = new MedianSeries('DBC~', funds).series()!;
    expect(volOf(unscaled)).toBeLessThan(0.5 * vols[3]!);
    const k = vols[3]! / volOf(unscaled);
    const own = plan.contextFor('C0')[at]!;
    const ownUnscaled = new MedianSeries('DBC~', funds).series('C0')!;
    for (let i = 1; i < own.dates.length; i++) expect(own.logClose[i]! - own.logClose[i - 1]!).toBeCloseTo(k * (ownUnscaled.logClose[i]! - ownUnscaled.logClose[i - 1]!), 12);
    expect(scaleSeries(unscaled, 1)).toBe(unscaled);
    expect(scaleToVolatility({ ticker: 'X', dates: Int32Array.of(1, 2), logClose: Float64Array.of(0, 0) }, 0.2)).toBe(1);
  });

  it('evaluate takes --stand-in-context on or off and names anything else', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    const cli = path.join(repoRoot, 'src', 'cli', 'evaluate.ts');
    const e = await promisify(execFile)(tsx, [cli, '--data', repoRoot, '--stand-in-context', 'maybe'], { cwd: repoRoot }).catch((x: { code: number; stderr: string }) => x);
    expect((e as { code: number }).code).toBe(2);
    expect((e as { stderr: string }).stderr).toContain('Expected on or off for --stand-in-context but received "maybe"');
  });
});

describe.skipIf(!haveMarketData)('stand-in context on real data', () => {
  // The development folder without the reference series and every fund evaluate takes in their place: a folder of
  // other tickers from years that no context folder covers.
  const references = new Set<string>(
    CONTEXT_SET.flatMap((c) => [c.ticker, ...c.alternates, ...('scaledAlternates' in c ? c.scaledAlternates.map((a) => a.ticker) : []), ...('inverseAlternates' in c ? c.inverseAlternates : [])]),
  );
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'moe-stand-in-'));
    for (const f of readdirSync(marketData)) if (!references.has(f.replace(/\.csv$/, ''))) await symlink(path.join(marketData, f), path.join(dir, f));
  });
  afterAll(async () => {
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  it('routes a folder without reference series far better with stand-ins than without', async () => {
    const off = await evaluateDirectory({ dataDir: dir, standInContext: false });
    const on = await evaluateDirectory({ dataDir: dir });
    expect(off.tickers).toBe(on.tickers);
    expect(off.context.standIn).toBeUndefined();
    expect(Object.keys(on.context.standIn ?? {})).toEqual(['SPY', 'IEF', 'DBC']);
    expect(on.context.standIn!.SPY).toMatch(/^stand-in: median daily return of \d+ instruments \(routed Equities\), every day$/);
    // On the shipped model: 86.0 % of days without, 96.9 % with (calibration error 0.029 and 0.008).
    expect(on.perDay.accuracy! - off.perDay.accuracy!).toBeGreaterThan(0.05);
    expect(on.perTicker.accuracy!).toBeGreaterThanOrEqual(off.perTicker.accuracy!);
    expect(on.ece).toBeLessThan(off.ece);
    // The whole folder has its reference series: nothing stands in, and the routes are those without the option.
    const whole = await evaluateDirectory({ dataDir: marketData, tickers: ['AAPL', 'TLT', 'GLD', 'DBA', 'UVXY', 'SPY'] });
    expect(whole.context.standIn).toBeUndefined();
  });

  it('evaluate prints what stood in, and keeps it in --json', async () => {
    const tsx = path.join(repoRoot, 'node_modules', '.bin', 'tsx');
    const cli = path.join(repoRoot, 'src', 'cli', 'evaluate.ts');
    const { stdout, stderr } = await promisify(execFile)(tsx, [cli, '--data', dir, '--json'], { cwd: repoRoot });
    expect(stdout).toMatch(/^context SPY: stand-in: median daily return of \d+ instruments \(routed Equities\), every day$/m);
    expect(stdout).toMatch(/^context DBC: stand-in: median daily return of \d+ instruments \(routed Commodities, scaled to their median volatility\), every day$/m);
    expect(stderr).toContain('warning: context series IEF: stand-in: median daily return of');
    const json = JSON.parse(stdout.trim().split('\n').at(-1)!) as { context: { standIn: Record<string, string> } };
    expect(Object.keys(json.context.standIn)).toEqual(['SPY', 'IEF', 'DBC']);
  });
});
