import type { Domain } from '../../domains.js';
import { Rng } from '../../util/random.js';
import type { Bar } from '../types.js';
import { businessDaysEnding, daysToIso, isoToDays } from '../dates.js';
import { SUBTYPE_CLASS, SUBTYPES, isSubtype, simTicker, type LeverageUnderlying, type Subtype } from '../universe.js';
import { buildFactors, type Factors } from './factors.js';
import { regimeOf, type RegimeFamily } from './regimes.js';
import { LEVERAGE_UNDERLYINGS, LEVERAGED_SUBTYPES, contextModel, instrumentModel, type PricePath } from './models.js';
import { CONTEXT_SET, NO_CONTEXT, contextSeries, scaleHistory, type ContextSeries, type MarketContext } from '../features/context.js';
import { STAND_IN_MIN_MEMBERS, STAND_IN_SLOTS, scaleSeries, slotScale, spliceContext } from '../features/stand-in.js';

/** Last simulated day when the caller names none: fixed so that a seed reproduces a run on any day. */
export const DEFAULT_SIM_END = '2025-06-30';

export interface InstrumentSpec {
  class: Domain;
  subtype: string;
  /** Leveraged and inverse funds only: what the fund tracks (drawn per instrument when absent). */
  underlying?: LeverageUnderlying;
}

export interface TrainingInstrument {
  ticker: string;
  class: Domain;
  subtype: Subtype;
  /** The regime family of the instrument's market history. */
  family: RegimeFamily;
  bars: Bar[];
  /** The reference markets of the instrument's market history, degraded for a share of instruments (contextDropout). */
  context: MarketContext;
}

const factorCache = new Map<string, Factors>();
const FACTOR_CACHE_SIZE = 16;

/**
 * Market factors shared by every instrument of one (seed, regime family, calendar): cached because trainingSet asks
 * for them often. The regime's own numbers are drawn from (seed, family), apart from the factors' random stream.
 */
function factorsFor(seed: number, dates: Int32Array, family: RegimeFamily): Factors {
  const key = `${seed}:${family}:${dates.length}:${dates[dates.length - 1]}`;
  let f = factorCache.get(key);
  if (!f) {
    f = buildFactors(Rng.derive(seed, 'market-factors'), dates.length, Rng.derive(seed, 'rates-curve'), regimeOf(family, seed), Rng.derive(seed, 'episodes'), Rng.derive(seed, 'metals'));
    if (factorCache.size >= FACTOR_CACHE_SIZE) factorCache.delete(factorCache.keys().next().value as string);
    factorCache.set(key, f);
  }
  return f;
}

function checkSpec(ticker: string, spec: InstrumentSpec): Subtype {
  if (!isSubtype(spec.subtype)) {
    throw new TypeError(
      `Expected one of ${Object.values(SUBTYPES).flat().join(', ')} for subtype of ${ticker} but received ${JSON.stringify(spec.subtype)}`,
    );
  }
  if (SUBTYPE_CLASS[spec.subtype] !== spec.class) {
    throw new TypeError(
      `Expected class ${SUBTYPE_CLASS[spec.subtype]} for subtype ${spec.subtype} of ${ticker} but received ${JSON.stringify(spec.class)}`,
    );
  }
  if (spec.underlying !== undefined) {
    if (!LEVERAGED_SUBTYPES.has(spec.subtype)) {
      throw new TypeError(`Expected no underlying for subtype ${spec.subtype} of ${ticker} (only ${[...LEVERAGED_SUBTYPES].join(', ')} take one)`);
    }
    if (!(LEVERAGE_UNDERLYINGS as readonly string[]).includes(spec.underlying)) {
      throw new TypeError(`Expected one of ${LEVERAGE_UNDERLYINGS.join(', ')} for underlying of ${ticker} but received ${JSON.stringify(spec.underlying)}`);
    }
  }
  return spec.subtype;
}

/**
 * Daily OHLCV bars of one synthetic instrument: `days` business days ending on or before `end`. Deterministic per
 * (ticker, spec, days, seed, end); the common factors (equity market, rates, credit, commodities, volatility, dollar)
 * depend only on (seed, calendar), so instruments simulated with one seed move together as real ones do.
 */
export function simulateBars(
  ticker: string,
  spec: InstrumentSpec,
  days: number,
  seed: number,
  end: string = DEFAULT_SIM_END,
): Bar[] {
  if (!Number.isInteger(days) || days < 2 || days > 100_000) {
    throw new RangeError(`Expected integer in [2, 100000] for days but received ${String(days)}`);
  }
  const endDays = isoToDays(end);
  if (!Number.isFinite(endDays)) {
    throw new TypeError(`Expected ISO date YYYY-MM-DD for end but received ${JSON.stringify(end)}`);
  }
  return simulateOnMarket(ticker, checkSpec(ticker, spec), days, seed, seed, endDays, 'recent', spec.underlying);
}

/** simulateBars with the market history drawn from its own seed (trainingSet mixes several histories). */
function simulateOnMarket(
  ticker: string,
  subtype: Subtype,
  days: number,
  seed: number,
  marketSeed: number,
  endDays: number,
  family: RegimeFamily,
  underlying?: LeverageUnderlying,
): Bar[] {
  const dates = businessDaysEnding(endDays, days);
  return toBars(pathOnMarket(ticker, subtype, dates, seed, marketSeed, family, underlying), dates);
}

/** simulateOnMarket's price path, before it becomes bars. */
function pathOnMarket(
  ticker: string,
  subtype: Subtype,
  dates: Int32Array,
  seed: number,
  marketSeed: number,
  family: RegimeFamily,
  underlying?: LeverageUnderlying,
): PricePath {
  return instrumentModel(subtype, Rng.derive(seed, `instrument:${ticker}`), factorsFor(marketSeed, dates, family), underlying);
}

/**
 * ISO strings of day numbers, shared by every ticker simulated on the same calendar (one string per business day,
 * 261 a year): building them again for each ticker's bars was a tenth of the simulator's time.
 */
const isoDates = new Map<number, string>();

function isoDate(days: number): string {
  let iso = isoDates.get(days);
  if (iso === undefined) {
    iso = daysToIso(days);
    if (isoDates.size < 100_000) isoDates.set(days, iso);
  }
  return iso;
}

function toBars(path: PricePath, dates: Int32Array): Bar[] {
  const days = dates.length;
  const bars: Bar[] = new Array<Bar>(days);
  for (let t = 0; t < days; t++) {
    const close = path.close[t]!;
    bars[t] = {
      date: isoDate(dates[t]!),
      open: path.open[t]!,
      high: path.high[t]!,
      low: path.low[t]!,
      close,
      adjClose: close,
      volume: path.volume[t]!,
    };
  }
  return bars;
}

/**
 * Bars of the context set (SPY, IEF, GLD, DBC, UUP stand-ins) on the market history of `marketSeed`: the same
 * factors as every instrument simulated with that seed, so correlations and betas come out as in a real market.
 */
export function simulateContextBars(
  marketSeed: number,
  days: number,
  end: string = DEFAULT_SIM_END,
  family: RegimeFamily = 'recent',
): Map<string, Bar[]> {
  const endDays = isoToDays(end);
  if (!Number.isFinite(endDays)) {
    throw new TypeError(`Expected ISO date YYYY-MM-DD for end but received ${JSON.stringify(end)}`);
  }
  const dates = businessDaysEnding(endDays, days);
  const factors = factorsFor(marketSeed, dates, family);
  return new Map(
    CONTEXT_SET.map(({ name, ticker }) => [ticker, toBars(contextModel(name, Rng.derive(marketSeed, `context:${name}`), factors), dates)]),
  );
}

/** simulateContextBars as a MarketContext. */
export function simulateContext(
  marketSeed: number,
  days: number,
  end: string = DEFAULT_SIM_END,
  family: RegimeFamily = 'recent',
): MarketContext {
  const bars = simulateContextBars(marketSeed, days, end, family);
  return CONTEXT_SET.map(({ ticker }) => contextSeries(ticker, bars.get(ticker)!));
}

/**
 * Training must also teach what to do when context is missing or partial (a source without the reference series,
 * history that starts later than the instrument's): a degraded copy of the full context, drawn per instrument. With
 * probability `inceptionShare` it is drawn in the reference funds' listing order (`contextByInception`); otherwise none
 * at all (40 %), each series missing with probability ½ (30 %), or every series only after one random date (30 %).
 * `full` is in `CONTEXT_SET`'s order. Share 0 draws exactly as before the option existed.
 */
export function degradeContext(full: MarketContext, rng: Rng, inceptionShare = 0): MarketContext {
  if (inceptionShare > 0 && rng.next() < inceptionShare) return contextByInception(full, rng);
  const mode = rng.next();
  if (mode < 0.4) return NO_CONTEXT;
  if (mode < 0.7) return full.map((c) => (rng.next() < 0.5 ? null : c));
  // Context that starts late: only the last part of the instrument's history has a partner.
  const keep = rng.uniform(0.1, 0.9);
  return full.map((c) => (c === null ? null : startingLate(c, 1 - keep)));
}

/** The series from the given fraction of its bars on (a view, no copy; the series itself when that is its first bar). */
function startingLate(c: ContextSeries, fraction: number): ContextSeries {
  const from = Math.floor(c.dates.length * fraction);
  if (from === 0) return c;
  return { ticker: c.ticker, dates: c.dates.subarray(from), logClose: c.logClose.subarray(from) };
}

/**
 * Context as a source of earlier years has it: the reference funds were listed one after another, in `CONTEXT_SET`'s
 * order (SPY 1993-01, IEF 2002-07, GLD 2004-11, DBC 2006-02, UUP 2007-02), so a history of 1999–2007 has SPY alone, then
 * SPY and IEF, and so on, each series from its listing date on. The series present are the first k (k uniform in
 * 1…5); each starts at a fraction of the history drawn from max(0, U(−1, 0.9)) (about half whole, the rest late), the
 * fractions sorted so that a series listed later never starts earlier.
 */
function contextByInception(full: MarketContext, rng: Rng): MarketContext {
  const k = 1 + Math.floor(rng.next() * full.length);
  const starts = Array.from({ length: k }, () => Math.max(0, rng.uniform(-1, 0.9))).sort((a, b) => a - b);
  return full.map((c, j) => (c === null || j >= k ? null : startingLate(c, starts[j]!)));
}

/** Stocks simulated beside a history's own instruments for its equity stand-ins (a history holds one stock and one index fund). */
const STAND_IN_EXTRA_STOCKS = 4;

/** One stand-in member: its daily log returns on the history's calendar, its annualised volatility and its domain. */
interface StandInMember {
  ticker: string;
  domain: Domain;
  returns: Float64Array;
  volatility: number;
}

/** A history's stand-in members (its own instruments, before any gaps, and the extra stocks) and their calendar. */
interface StandInMembers {
  dates: Int32Array;
  members: StandInMember[];
}

/**
 * Context as `npm run evaluate` makes it where a folder has no reference funds (src/data/features/stand-in.ts): the
 * equity, rates and commodity series replaced by the daily median of 3 to all of the history's other instruments of
 * their domain (now and then one of another domain with them, as a folder's first routing strays; the slot's
 * volatility floor applied after), scaled as the slot says; the instrument itself is never its own member. Half the
 * time gold and the dollar are missing and the stand-ins cover every day; otherwise every reference series exists
 * from a random fraction of the history on and the stand-ins fill the days before (a folder of earlier years with
 * `--context-dir` data of later ones). The members share one calendar, so each day's median is read off their returns;
 * they are simulated unscaled, so the stand-ins take the history's factor `k` (scaleHistory) after.
 */
function standInTrainingContext(ticker: string, full: MarketContext, history: StandInMembers, k: number, rng: Rng): MarketContext {
  const late = rng.next() < 0.5 ? rng.uniform(0.1, 0.9) : undefined;
  const out: (ContextSeries | null)[] = full.map((c) => (late === undefined || c === null ? null : startingLate(c, late)));
  const n = history.dates.length;
  const others = history.members.filter((m) => m.ticker !== ticker);
  for (const slot of STAND_IN_SLOTS) {
    const group = others.filter((m) => m.domain === slot.domain);
    const size = Math.min(group.length, 3 + Math.floor(rng.next() * Math.max(1, group.length - 2)));
    const chosen = group.map((m) => [rng.next(), m] as const).sort((x, y) => x[0] - y[0]).slice(0, size).map((x) => x[1]);
    if (rng.next() < 0.25) {
      const strays = others.filter((m) => m.domain !== slot.domain);
      chosen.push(strays[Math.floor(rng.next() * strays.length)]!);
    }
    const kept = chosen.filter((m) => m.volatility >= slot.minVolatility);
    if (kept.length < STAND_IN_MIN_MEMBERS) continue;
    const logClose = new Float64Array(n);
    const size2 = kept.length;
    const day = new Float64Array(size2);
    for (let t = 1; t < n; t++) {
      // The day's returns in order (insertion: a handful of members), their median.
      for (let j = 0; j < size2; j++) {
        const r = kept[j]!.returns[t - 1]!;
        let q = j;
        while (q > 0 && day[q - 1]! > r) day[q] = day[--q]!;
        day[q] = r;
      }
      logClose[t] = logClose[t - 1]! + (size2 % 2 === 1 ? day[(size2 - 1) / 2]! : 0.5 * (day[size2 / 2 - 1]! + day[size2 / 2]!));
    }
    const index = CONTEXT_SET.findIndex((c) => c.name === slot.name);
    const unscaled: ContextSeries = { ticker: `${CONTEXT_SET[index]!.ticker}~`, dates: history.dates, logClose };
    const f = slotScale(slot, unscaled, kept.map((m) => m.volatility));
    out[index] = spliceContext(out[index] ?? null, scaleSeries(unscaled, f * k));
  }
  return out;
}

/** The bar as a close-only vendor gives it. */
const closeOnly = (b: Bar): Bar => ({ ...b, open: b.close, high: b.close, low: b.close });

export interface TrainingSetOptions {
  /** Seed of the whole set (factors and every instrument). */
  seed: number;
  /** Instruments per sub-type (every sub-type of every domain). */
  tickersPerSubtype: number;
  /** Bars per instrument, before any days are dropped. */
  days: number;
  /** Share of instruments that lose random days, as thin real ETFs do (18–28 % missing). @defaultValue 0.15 */
  gappyShare?: number;
  /**
   * Share of instruments from a vendor that gives closes only (open = high = low = close), so the router also learns to
   * route without an intraday range. @defaultValue 0.05
   */
  closeOnlyShare?: number;
  /** Last day. @defaultValue DEFAULT_SIM_END */
  end?: string;
  /**
   * Independent market histories the instruments are spread over (instrument i lives in history i mod k). One
   * history is one 2020–2025: a model trained on it learns that period's accidents; several teach the classes.
   * @defaultValue 8
   */
  marketPaths?: number;
  /** Share of instruments whose context is removed, thinned or cut short (degradeContext). @defaultValue 0 */
  contextDropout?: number;
  /**
   * Share of those degraded contexts drawn as the reference funds' listing order leaves them in earlier years (the
   * first k series, later ones starting later: `contextByInception`) instead of the other modes. @defaultValue 0
   */
  contextInceptionShare?: number;
  /**
   * Share of the degraded contexts replaced by stand-ins made of other instruments of the same history, as `npm run
   * evaluate` stands in for missing reference funds (standInTrainingContext). Its own random stream: 0 changes no
   * other draw. @defaultValue 0
   */
  standInShare?: number;
  /** Regime family of every market history of the set (regimes.ts). @defaultValue 'recent' */
  family?: RegimeFamily;
  /**
   * Share of instruments that are new listings: only their last 60–400 bars exist (log-uniform), so the router meets
   * as many short histories as a market with recent listings holds. @defaultValue 0
   */
  newListingShare?: number;
  /**
   * Share of market histories whose every series (instruments and context) has its log returns, and its bars' ranges,
   * multiplied by one factor k, log-uniform in `volScaleRange`: the same market, calmer or wilder as a whole, so that
   * a class is told by how a series moves against the others rather than by its volatility alone (scaleHistory).
   * @defaultValue 0
   */
  volScaleShare?: number;
  /** Range of that factor. @defaultValue [0.5, 2] */
  volScaleRange?: readonly [number, number];
  /**
   * Scale only the instruments that keep their whole context: those whose context is degraded (contextDropout) keep
   * their own volatility and the unscaled context, so the routes short of context still learn volatility levels.
   * @defaultValue false: every series of a scaled history
   */
  volScaleWholeContextOnly?: boolean;
}

/** The context series with their log closes multiplied by k from their first (scaleHistory's market). */
function scaleContext(ctx: MarketContext, k: number): MarketContext {
  if (k === 1) return ctx;
  return ctx.map((c) => {
    if (c === null) return null;
    const l0 = c.logClose[0] ?? 0;
    return { ticker: c.ticker, dates: c.dates, logClose: c.logClose.map((l) => l0 + k * (l - l0)) };
  });
}

/**
 * Many labelled synthetic instruments (`SIM-EQ-STK-000`, …), every sub-type `tickersPerSubtype` times, each with
 * its own parameters. A share of them lose random days so features meet multi-day returns in training too.
 */
export function trainingSet(opts: TrainingSetOptions): TrainingInstrument[] {
  return [...trainingInstruments(opts)];
}

/**
 * `trainingSet`'s instruments one at a time, each simulated when asked for: a caller that turns each into tokens
 * before asking for the next (`seedTokens`) never holds a whole set's bars, which would outlive the garbage
 * collector's young generation (a set of 1,000 days holds over 100,000 bars). The same instruments in the same order.
 */
export function* trainingInstruments(opts: TrainingSetOptions): Generator<TrainingInstrument, void, undefined> {
  if (!Number.isInteger(opts.tickersPerSubtype) || opts.tickersPerSubtype < 1 || opts.tickersPerSubtype > 9999) {
    throw new RangeError(
      `Expected integer in [1, 9999] for tickersPerSubtype but received ${String(opts.tickersPerSubtype)}`,
    );
  }
  const gappyShare = opts.gappyShare ?? 0.15;
  const closeOnlyShare = opts.closeOnlyShare ?? 0.05;
  const paths = opts.marketPaths ?? 8;
  if (!Number.isInteger(paths) || paths < 1 || paths > 1000) {
    throw new RangeError(`Expected integer in [1, 1000] for marketPaths but received ${String(paths)}`);
  }
  if (!Number.isInteger(opts.days) || opts.days < 2 || opts.days > 100_000) {
    throw new RangeError(`Expected integer in [2, 100000] for days but received ${String(opts.days)}`);
  }
  const endDays = isoToDays(opts.end ?? DEFAULT_SIM_END);
  if (!Number.isFinite(endDays)) {
    throw new TypeError(`Expected ISO date YYYY-MM-DD for end but received ${JSON.stringify(opts.end)}`);
  }
  const dropout = opts.contextDropout ?? 0;
  const inceptionShare = opts.contextInceptionShare ?? 0;
  if (!(inceptionShare >= 0 && inceptionShare <= 1)) {
    throw new RangeError(`Expected a share in [0, 1] for contextInceptionShare but received ${String(opts.contextInceptionShare)}`);
  }
  const family = opts.family ?? 'recent';
  const volShare = opts.volScaleShare ?? 0;
  const [volLo, volHi] = opts.volScaleRange ?? [0.5, 2];
  if (!(volShare >= 0 && volShare <= 1) || !(volLo > 0 && volHi >= volLo)) {
    throw new RangeError(`Expected volScaleShare in [0, 1] and 0 < lo ≤ hi for volScaleRange but received ${volShare}, [${volLo}, ${volHi}]`);
  }
  // One factor per market history, drawn from that history's seed: its instruments and its context move together.
  const volK = (marketSeed: number): number => {
    if (volShare === 0) return 1;
    const r = Rng.derive(marketSeed, 'vol-scale');
    return r.next() < volShare ? Math.exp(r.uniform(Math.log(volLo), Math.log(volHi))) : 1;
  };
  // Each history's context simulated once, and scaled once per factor (a degraded context keeps k = 1 beside the
  // history's own factor: simulating it again for each was a sixth of the simulator's time).
  const unscaled = new Map<number, MarketContext>();
  const contexts = new Map<string, MarketContext>();
  const contextOf = (marketSeed: number, k: number): MarketContext => {
    const key = `${marketSeed}:${k}`;
    let c = contexts.get(key);
    if (c === undefined) {
      let base = unscaled.get(marketSeed);
      if (base === undefined) unscaled.set(marketSeed, (base = simulateContext(marketSeed, opts.days, opts.end ?? DEFAULT_SIM_END, family)));
      c = scaleContext(base, k);
      contexts.set(key, c);
    }
    return c;
  };
  const wholeOnly = opts.volScaleWholeContextOnly === true;
  const standInShare = opts.standInShare ?? 0;
  if (!(standInShare >= 0 && standInShare <= 1)) throw new RangeError(`Expected a share in [0, 1] for standInShare but received ${String(opts.standInShare)}`);
  // With stand-ins, every instrument's price path is simulated first (before any gaps or scaling, as its history's
  // member) and made into bars when its turn comes: the stand-ins of an instrument need the others of its history,
  // whichever comes first in the order below. Paths, not bars, wait: typed arrays cost the collector nothing.
  const presimulated = new Map<string, PricePath>();
  const histories = new Map<number, StandInMembers>();
  const marketSeedOf = (i: number): number => (i % paths === 0 ? opts.seed : Rng.derive(opts.seed, `market-path:${i % paths}`).int(2 ** 31));
  const dates = businessDaysEnding(endDays, opts.days);
  if (standInShare > 0) {
    const member = (ticker: string, domain: Domain, path: PricePath): StandInMember => {
      const returns = new Float64Array(path.close.length - 1);
      let sum = 0;
      for (let t = 1; t < path.close.length; t++) sum += (returns[t - 1] = Math.log(path.close[t]! / path.close[t - 1]!)) ** 2;
      return { ticker, domain, returns, volatility: returns.length === 0 ? 0 : Math.sqrt((252 * sum) / returns.length) };
    };
    for (const [cls, subs] of Object.entries(SUBTYPES) as [Domain, readonly Subtype[]][]) {
      for (const subtype of subs) {
        for (let i = 0; i < opts.tickersPerSubtype; i++) {
          const ticker = simTicker(subtype, i);
          const marketSeed = marketSeedOf(i);
          const path = pathOnMarket(ticker, subtype, dates, opts.seed, marketSeed, family);
          presimulated.set(ticker, path);
          let h = histories.get(marketSeed);
          if (h === undefined) {
            histories.set(marketSeed, (h = { dates, members: [] }));
            for (let e = 0; e < STAND_IN_EXTRA_STOCKS; e++) {
              const extra = `${simTicker('stock', 9000 + e)}@${i % paths}`;
              h.members.push(member(extra, 'Equities', pathOnMarket(extra, 'stock', dates, opts.seed, marketSeed, family)));
            }
          }
          h.members.push(member(ticker, cls, path));
        }
      }
    }
  }
  for (const [cls, subs] of Object.entries(SUBTYPES) as [Domain, readonly Subtype[]][]) {
    for (const subtype of subs) {
      for (let i = 0; i < opts.tickersPerSubtype; i++) {
        const ticker = simTicker(subtype, i);
        // History 0 is the seed's own, so a one-path set equals what simulateBars gives for the same seed.
        const marketSeed = marketSeedOf(i);
        // The context draw first (its own stream, so the order changes no draw): with wholeOnly it decides the scaling.
        const crng = Rng.derive(opts.seed, `context:${ticker}`);
        const degraded = crng.next() < dropout;
        const k = wholeOnly && degraded ? 1 : volK(marketSeed);
        const path = presimulated.get(ticker) ?? pathOnMarket(ticker, subtype, dates, opts.seed, marketSeed, family);
        presimulated.delete(ticker);
        let bars = scaleHistory(toBars(path, dates), k);
        const rng = Rng.derive(opts.seed, `gaps:${ticker}`);
        if (rng.next() < gappyShare) {
          const dropRate = rng.uniform(0.02, 0.25);
          bars = bars.filter((_, t) => t === 0 || rng.next() >= dropRate);
        }
        if (Rng.derive(opts.seed, `vendor:${ticker}`).next() < closeOnlyShare) bars = bars.map(closeOnly);
        const lrng = Rng.derive(opts.seed, `listing:${ticker}`);
        if (lrng.next() < (opts.newListingShare ?? 0)) {
          const keep = Math.round(Math.exp(lrng.uniform(Math.log(60), Math.log(400))));
          if (bars.length > keep) bars = bars.slice(bars.length - keep);
        }
        const srng = standInShare > 0 && degraded ? Rng.derive(opts.seed, `stand-in:${ticker}`) : undefined;
        const context = !degraded
          ? contextOf(marketSeed, k)
          : srng !== undefined && srng.next() < standInShare
            ? standInTrainingContext(ticker, contextOf(marketSeed, k), histories.get(marketSeed)!, k, srng)
            : degradeContext(contextOf(marketSeed, k), crng, inceptionShare);
        yield { ticker, class: cls, subtype, family, bars, context };
      }
    }
  }
}
