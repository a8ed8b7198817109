import type { Rng } from '../../util/random.js';
import { Garch, RATES_REFERENCE_DURATION, shortEndScale, treasuryReturn, type Factors } from './factors.js';
import type { Domain } from '../../domains.js';
import { SUBTYPE_CLASS, type LeverageUnderlying, type Subtype } from '../universe.js';
import type { ContextName } from '../features/context.js';

/** Simulated prices of one instrument on the adjusted scale, one entry per day. */
export interface PricePath {
  open: Float64Array;
  high: Float64Array;
  low: Float64Array;
  close: Float64Array;
  volume: Float64Array;
}

/** What a sub-type model hands to the bar builder. */
interface Returns {
  /** Close-to-close log return of day t (r[0] is ignored). */
  r: Float64Array;
  /** Extra overnight move of day t already contained in r (earnings news), kept out of the intraday range. */
  gapJump: Float64Array;
  /** Share of a day's variance that falls between the previous close and the open. */
  overnight: number;
  /** Volume response to |return| in units of the day's volatility. */
  volumeBeta: number;
  /** Heavily traded (single stocks, index ETFs): wide ranges and steady volume on every feed. */
  liquid: boolean;
}

/** Idiosyncratic GARCH noise with fat tails and a stress multiplier, scaled by the regime (dispersion of the era). */
function idio(rng: Rng, f: Factors, sigmaRecent: number, opts: { nu?: number; stressMult?: number } = {}): Float64Array {
  const sigma = sigmaRecent * f.regime.idioScale;
  const nu = opts.nu ?? Math.round(rng.uniform(5, 9));
  const stressMult = opts.stressMult ?? 1.5;
  const g = new Garch(rng.uniform(0.02, 0.07), rng.uniform(0.85, 0.93), rng.uniform(0.01, 0.06));
  const out = new Float64Array(f.n);
  for (let t = 0; t < f.n; t++) {
    const z = rng.studentT(nu);
    out[t] = sigma * g.scale() * (f.stress[t] ? stressMult : 1) * z;
    g.update(z);
  }
  return out;
}

/** Daily multiplicative product: simple return L·(underlying simple return) − fees, as log return. */
function leveraged(u: Float64Array, lev: number, feePerDay: number): Float64Array {
  const out = new Float64Array(u.length);
  for (let t = 0; t < u.length; t++) {
    const simple = lev * Math.expm1(u[t]!) - feePerDay;
    out[t] = Math.log(Math.max(0.02, 1 + simple));
  }
  return out;
}

/** A value of the draw below that lands in each branch (the draw is still made, so the random stream stays aligned). */
const UNDERLYING_PICK: Record<LeverageUnderlying, number> = { equity: 0.3, rates: 0.7, gold: 0.8, silver: 0.86, oil: 0.94, natgas: 0.98 };

export const LEVERAGE_UNDERLYINGS = Object.keys(UNDERLYING_PICK) as readonly LeverageUnderlying[];

/** The sub-types modelled on a leveraged underlying, the only ones an underlying can be named for. */
export const LEVERAGED_SUBTYPES: ReadonlySet<Subtype> = new Set<Subtype>(['leveraged-2x', 'leveraged-3x', 'inverse']);

/**
 * The underlying of a leveraged or inverse fund: mostly an equity index, sometimes bonds, gold or oil; `known` fixes
 * it for funds whose underlying is known (the built-in universe's TQQQ, SDS …).
 */
function leverageUnderlying(rng: Rng, f: Factors, known?: LeverageUnderlying): { u: Float64Array; overnight: number } {
  const drawn = rng.next();
  const pick = known === undefined ? drawn : UNDERLYING_PICK[known];
  const u = new Float64Array(f.n);
  if (pick < 0.64) {
    // Broad indices track the market tightly; sector and small-cap indices (semiconductors, biotech) less so.
    const beta = rng.uniform(0.9, 1.5);
    const e = idio(rng, f, rng.next() < 0.7 ? rng.uniform(0.0005, 0.002) : rng.uniform(0.003, 0.012));
    for (let t = 0; t < f.n; t++) u[t] = beta * f.market[t]! + e[t]!;
    return { u, overnight: rng.uniform(0.22, 0.45) };
  }
  if (pick < 0.76) {
    const dur = rng.uniform(7, 20);
    const e = idio(rng, f, 0.0005);
    for (let t = 0; t < f.n; t++) u[t] = treasuryReturn(f, t, dur) + e[t]!;
    return { u, overnight: rng.uniform(0.5, 0.7) };
  }
  if (pick >= 0.96) {
    // Natural-gas futures (BOIL, KOLD): the commodity's own wild process, weakly tied to oil, in steep contango.
    const e = idio(rng, f, rng.uniform(0.025, 0.04), { nu: Math.round(rng.uniform(4, 7)), stressMult: 1.3 });
    for (let t = 0; t < f.n; t++) u[t] = -0.0008 + 1.5 * f.regime.futuresCarry + 0.2 * f.oil[t]! + e[t]!;
    return { u, overnight: rng.uniform(0.55, 0.78) };
  }
  // Gold, silver or crude-oil futures: the fund tracks its future, so its beta to the reference market is the
  // leverage (times silver's 1.5 to gold), far above what a plain commodity fund shows; not perfectly, though (UGL
  // against GLD: correlation 0.92, so up to 0.5 %/day of tracking noise before leverage).
  const kind = pick < 0.84 ? 'gold' : pick < 0.88 ? 'silver' : 'oil';
  const src = kind === 'oil' ? f.oil : f.gold;
  const beta = kind === 'silver' ? rng.uniform(1.3, 1.8) : rng.uniform(0.95, 1.05);
  const e = idio(rng, f, kind === 'silver' ? rng.uniform(0.006, 0.012) : rng.uniform(0.0005, 0.005));
  const carry = kind === 'oil' ? f.regime.futuresCarry : 0;
  for (let t = 0; t < f.n; t++) u[t] = carry + beta * src[t]! + e[t]!;
  return { u, overnight: rng.uniform(0.55, 0.78) };
}

/** Return of a VIX-futures ETN: about half the log move of the index, plus the roll (contango decay when calm). */
function vixFutures(f: Factors): Float64Array {
  const out = new Float64Array(f.n);
  const calm = Math.log(17) + 0.5;
  for (let t = 1; t < f.n; t++) {
    const roll = -0.0045 * Math.tanh(2.5 * (calm - f.vix[t - 1]!));
    out[t] = 0.5 * (f.vix[t]! - f.vix[t - 1]!) + roll;
  }
  return out;
}

const combine = (n: number, fn: (t: number) => number): Float64Array => {
  const out = new Float64Array(n);
  for (let t = 0; t < n; t++) out[t] = fn(t);
  return out;
};

/** A factor mix added to an equity's market beta. */
type Loadings = (f: Factors, t: number) => number;

/**
 * Sector exposure of a stock or sector fund: energy and materials move with oil (XOM, XLE: ≈ 0.3–0.6 of the oil
 * return on top of the market), utilities and real estate with rates, most with neither. Without these, energy
 * stocks look like commodity funds to a router that reads correlations.
 */
function sectorLoadings(rng: Rng): Loadings {
  const pick = rng.next();
  if (pick < 0.15) {
    const oil = rng.uniform(0.25, 0.6);
    return (f, t) => oil * f.oil[t]!;
  }
  if (pick < 0.22) {
    const metals = rng.uniform(0.2, 0.6);
    return (f, t) => metals * 0.5 * (f.gold[t]! + f.oil[t]!);
  }
  if (pick < 0.3) {
    const dur = rng.uniform(2, 6);
    return (f, t) => treasuryReturn(f, t, dur);
  }
  return () => 0;
}

/** Non-US equity index in dollars: its currency (against the dollar) and, for emerging markets, commodities. */
function foreignLoadings(rng: Rng): Loadings {
  const fx = -rng.uniform(0.3, 1);
  const cmd = rng.next() < 0.5 ? rng.uniform(0.1, 0.3) : 0;
  return (f, t) => fx * f.fx[t]! + cmd * (0.5 * f.oil[t]! + 0.5 * f.gold[t]!);
}

function subtypeReturns(subtype: Subtype, rng: Rng, f: Factors, underlying?: LeverageUnderlying): Returns {
  const n = f.n;
  const gapJump = new Float64Array(n);
  const U = (lo: number, hi: number): number => rng.uniform(lo, hi);
  const res = (r: Float64Array, overnight: number, volumeBeta = U(0.15, 0.4)): Returns => ({
    r,
    gapJump,
    overnight,
    volumeBeta,
    liquid: false,
  });
  switch (subtype) {
    case 'stock': {
      // Defensive names (staples, health care) sit near β 0.3–0.6, growth names up to 1.8.
      const beta = U(0.3, 1.8);
      const drift = U(-0.0003, 0.0007);
      const e = idio(rng, f, U(0.009, 0.026), { nu: Math.round(U(4, 7)) });
      const sector = sectorLoadings(rng);
      // Quarterly earnings: an overnight jump of several idiosyncratic sigmas.
      const phase = rng.int(63);
      const size = U(2, 5) * U(0.008, 0.02);
      const r = combine(n, (t) => drift + beta * f.market[t]! + sector(f, t) + e[t]!);
      for (let t = phase; t < n; t += 60 + rng.int(7)) {
        gapJump[t] = rng.normal() * size;
        r[t] = r[t]! + gapJump[t]!;
      }
      return { r, gapJump, overnight: U(0.2, 0.45), volumeBeta: U(0.2, 0.45), liquid: true };
    }
    case 'index-etf': {
      const beta = U(0.75, 1.25);
      const e = idio(rng, f, U(0.0008, 0.006));
      // One in five tracks a non-US index, whose home market trades while New York sleeps; emerging markets also
      // move with commodities and against the dollar. Sector funds carry their sector's loadings.
      const foreign = rng.next() < 0.2;
      const overnight = foreign ? U(0.5, 0.7) : U(0.3, 0.48);
      const sector = foreign ? foreignLoadings(rng) : sectorLoadings(rng);
      const r = combine(n, (t) => (foreign ? 0.75 : 1) * beta * f.market[t]! + sector(f, t) + e[t]!);
      return { r, gapJump, overnight, volumeBeta: U(0.15, 0.35), liquid: true };
    }
    case 'treasury-short': {
      const dur = U(0.8, 3);
      const e = idio(rng, f, U(0.00005, 0.0003));
      return res(combine(n, (t) => 0.00008 + treasuryReturn(f, t, dur) + e[t]!), U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'treasury-long': {
      // Up to the extended-duration and zero-coupon funds (EDV ≈ 24.5 years, ZROZ ≈ 27).
      const dur = rng.next() < 0.85 ? U(7, 22) : U(22, 28);
      const e = idio(rng, f, U(0.0003, 0.0012));
      return res(combine(n, (t) => treasuryReturn(f, t, dur) + e[t]!), U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'aggregate': {
      const dur = U(4.5, 7);
      const e = idio(rng, f, U(0.0002, 0.0007));
      return res(combine(n, (t) => treasuryReturn(f, t, dur) + 0.15 * f.credit[t]! + e[t]!), U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'tips': {
      const dur = U(2.5, 8) * 0.85;
      const e = idio(rng, f, U(0.0008, 0.0025));
      return res(combine(n, (t) => treasuryReturn(f, t, dur) + 0.03 * f.market[t]! + e[t]!), U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'credit-ig': {
      const dur = U(5, 10);
      const cs = U(0.2, 0.5);
      const e = idio(rng, f, U(0.0003, 0.0008));
      return res(combine(n, (t) => treasuryReturn(f, t, dur) + cs * f.credit[t]! + e[t]!), U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'credit-hy': {
      // High yield, or (one in three) emerging-market sovereign debt in dollars: longer duration, and it moves
      // against the dollar as EM currencies do (EMB: ≈ −0.5 correlation with the dollar fund).
      const em = rng.next() < 0.33;
      const dur = em ? U(5, 8) : U(2, 4.5);
      const cs = em ? U(0.3, 0.7) : U(0.6, 1.2);
      const beta = U(0.05, 0.2);
      const fxLoad = em ? -U(0.2, 0.5) : 0;
      const e = idio(rng, f, U(0.0005, 0.002), { nu: 4, stressMult: 2.5 });
      return res(
        combine(n, (t) => 0.0001 + treasuryReturn(f, t, dur) + cs * f.credit[t]! + beta * f.market[t]! + fxLoad * f.fx[t]! + e[t]!),
        U(0.45, 0.72),
        U(0.15, 0.35),
      );
    }
    case 'muni': {
      const dur = U(4, 8) * 0.6;
      const smooth = U(0.1, 0.35);
      const e = idio(rng, f, U(0.0004, 0.0012), { nu: 4, stressMult: 3 });
      // Muni prices are appraised, not traded: stale pricing shows as positive autocorrelation.
      const r = new Float64Array(n);
      for (let t = 0; t < n; t++) {
        r[t] = treasuryReturn(f, t, dur) + 0.1 * f.credit[t]! + e[t]! + (t > 0 ? smooth * r[t - 1]! : 0);
      }
      return res(r, U(0.45, 0.72), U(0.15, 0.35));
    }
    case 'cash-like': {
      const yieldPerDay = U(0, 0.0002);
      const dur = U(0.05, 0.4);
      const e = idio(rng, f, U(0.00002, 0.00015));
      // Bills sit on the policy rate: the level factor only, not the curve.
      const still = shortEndScale(f, dur);
      return res(combine(n, (t) => yieldPerDay + still * dur * f.rates[t]! + e[t]!), U(0.55, 0.9), U(0, 0.2));
    }
    case 'precious-metals': {
      if (rng.next() < 0.15) {
        // Platinum and palladium (PPLT, PALL): half gold, half industrial metal (catalysts), and their own supply shocks.
        const bg = U(0.5, 0.8);
        const bm = U(0.3, 0.6);
        const e = idio(rng, f, U(0.008, 0.012));
        return res(combine(n, (t) => bg * f.gold[t]! + bm * f.metals[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
      }
      const silver = rng.next() < 0.45;
      const beta = silver ? U(1.3, 1.8) : U(0.9, 1.1);
      const e = idio(rng, f, silver ? U(0.007, 0.014) : U(0.0003, 0.002));
      const mb = silver ? 0.1 : 0;
      return res(combine(n, (t) => beta * f.gold[t]! + mb * f.market[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
    }
    case 'industrial-metals': {
      // Base-metal futures funds (DBB, CPER, JJC): copper alone or a basket, rolling futures like the other funds.
      const beta = U(0.8, 1.3);
      const roll = -U(0, 0.0004) + 0.5 * f.regime.futuresCarry;
      const e = idio(rng, f, U(0.002, 0.007));
      return res(combine(n, (t) => roll + beta * f.metals[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
    }
    case 'energy': {
      if (rng.next() < 0.6) {
        const beta = U(0.8, 1.2);
        const roll = -U(0, 0.0008) + f.regime.futuresCarry;
        const e = idio(rng, f, U(0.002, 0.008));
        return res(combine(n, (t) => roll + beta * f.oil[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
      }
      // Natural gas: its own, wilder process, weakly tied to oil, with steep contango.
      const roll = -U(0.0005, 0.002) + 1.5 * f.regime.futuresCarry;
      const e = idio(rng, f, U(0.025, 0.042), { nu: Math.round(U(4, 7)), stressMult: 1.3 });
      return res(combine(n, (t) => roll + 0.2 * f.oil[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
    }
    case 'agriculture': {
      const beta = U(0.5, 1.3);
      const roll = -U(0, 0.0004) + 0.5 * f.regime.futuresCarry;
      const e = idio(rng, f, U(0.004, 0.014));
      return res(combine(n, (t) => roll + beta * f.agri[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
    }
    case 'broad-basket': {
      const wo = U(0.3, 0.55);
      const wa = U(0.1, 0.3);
      const wg = U(0.1, 0.25);
      const e = idio(rng, f, U(0.001, 0.003));
      const carry = (wo + 0.5 * wa) * f.regime.futuresCarry;
      return res(combine(n, (t) => carry + wo * f.oil[t]! + wa * f.agri[t]! + wg * f.gold[t]! + e[t]!), U(0.42, 0.75), U(0.25, 0.5));
    }
    case 'leveraged-2x':
    case 'leveraged-3x':
    case 'inverse': {
      const lev =
        subtype === 'leveraged-2x' ? 2 : subtype === 'leveraged-3x' ? 3 : -[1, 2, 3][Math.min(2, rng.int(3))]!;
      const { u, overnight } = leverageUnderlying(rng, f, underlying);
      return res(leveraged(u, lev, U(0.00025, 0.0005)), overnight, U(0.3, 0.55));
    }
    case 'volatility-long':
    case 'volatility-short': {
      const vx = vixFutures(f);
      const e = idio(rng, f, U(0.002, 0.006));
      const lev =
        subtype === 'volatility-long'
          ? (rng.next() < 0.35 ? 1.5 : 1) * U(0.9, 1.1)
          : -(rng.next() < 0.2 ? 1 : 0.5) * U(0.9, 1.1);
      return res(leveraged(combine(n, (t) => vx[t]! + e[t]!), lev, U(0.0002, 0.0004)), U(0.3, 0.45), U(0.1, 0.3));
    }
    case 'fx-trust': {
      const beta = (rng.next() < 0.5 ? 1 : -1) * U(0.6, 1.2);
      const carry = U(-0.00012, 0.00008);
      // A foreign currency against the dollar (beta < 0) carries its economy: a haven (yen, franc) rises with bonds and
      // gold when markets fear (FXY 2020–2025: IEF +0.52, GLD +0.42, SPY +0.02), a commodity currency (Australian,
      // Canadian dollar) with stocks, metals and oil. Both follow the dollar index loosely (FXY −0.57 against UUP, where
      // the euro, most of the index, sits at −0.92): their own policy moves them.
      const kind = beta > 0 ? 'dollar' : rng.next() < 0.35 ? 'haven' : rng.next() < 0.5 ? 'commodity' : 'plain';
      const own = kind === 'haven' || kind === 'commodity' ? U(0.0025, 0.0045) : U(0.0005, 0.0025);
      const e = idio(rng, f, own, { nu: Math.round(U(6, 12)), stressMult: 1.2 });
      const bRates = kind === 'haven' ? U(0.3, 0.7) * RATES_REFERENCE_DURATION : 0;
      const bGold = kind === 'haven' ? U(0, 0.15) : 0;
      const bMarket = kind === 'commodity' ? U(0.1, 0.25) : kind === 'haven' ? -U(0, 0.1) : 0;
      const bCommod = kind === 'commodity' ? U(0.05, 0.15) : 0;
      return res(
        combine(n, (t) => carry + beta * f.fx[t]! + bRates * f.rates[t]! + bGold * f.gold[t]! + bMarket * f.market[t]! + bCommod * (f.oil[t]! + f.metals[t]!) + e[t]!),
        U(0.6, 0.9),
      );
    }
  }
}

/**
 * Spread of the log-volume noise. Thinly traded funds (currency trusts, commodity and bond ETFs, small leveraged
 * funds) have far more erratic daily volume than large stocks; the upper ends reproduce the day-over-day ln-volume
 * changes of the single-venue development data (stocks 0.37–0.5, equity index funds up to 0.68 (VWO), bond funds
 * 0.45–1.5, commodity funds 0.6–1.5, leveraged and inverse funds 0.49–1.54 (UGL 1.15, DOG 1.25, TBF 1.54), currency
 * trusts 1.4–1.8). The lower ends reach down to consolidated-tape levels (Yahoo: TSLA, MSFT, NVDA 0.26–0.33 where IEX
 * shows 0.37–0.40), so that a model cannot lean on volume noise alone when the vendor changes. Until 2026-12-07 the
 * leveraged funds stopped at 0.8 and index funds at 0.4: a thin 2x gold fund (UGL) then looked like a commodity
 * trust by its volume alone, and a thin index fund (VWO, VEA) like a bond or commodity fund.
 */
const VOLUME_NOISE: Record<Domain | 'fx', [number, number]> = {
  Equities: [0.12, 0.4],
  'Fixed Income': [0.15, 1.3],
  Commodities: [0.3, 1.6],
  Derivatives: [0.2, 1.6],
  fx: [0.5, 2.2],
};

/** Equity index funds: as liquid as stocks at best, as erratic as VWO (0.68) on a single venue. */
const INDEX_FUND_VOLUME_NOISE: [number, number] = [0.12, 0.9];

/** Rounds to the cent like a quote screen; sub-dollar prices keep four decimals. */
const tick = (p: number): number =>
  p >= 1 ? Math.round(p * 100) / 100 : Math.max(1e-4, Math.round(p * 10_000) / 10_000);

/**
 * Turns returns into OHLCV. The close-to-close move is split into an overnight gap and an intraday Brownian path
 * whose high and low are drawn exactly (the reflection-principle law of the maximum of a bridge), then prices are
 * anchored to a random final price and rounded to the cent; the rounding is what makes near-cash funds look real.
 */
export function instrumentModel(subtype: Subtype, rng: Rng, f: Factors, underlying?: LeverageUnderlying): PricePath {
  const ret = subtypeReturns(subtype, rng, f, underlying);
  return pricePath(ret, rng, f.n, {
    rangeScale: ret.liquid ? [0.65, 1.1] : [0.2, 1],
    volumeNoise: subtype === 'index-etf' ? INDEX_FUND_VOLUME_NOISE : VOLUME_NOISE[subtype === 'fx-trust' ? 'fx' : SUBTYPE_CLASS[subtype]],
  });
}

/**
 * The reference markets of the context set (context.ts), with fixed loadings on the common factors: an S&P 500
 * fund, a 7–10 year Treasury fund (duration 7.5), a gold trust, an energy-heavy commodity basket and a dollar fund.
 * They are what real SPY, IEF, GLD, DBC and UUP are to the real market, so context features mean the same thing in
 * training as in the pipeline.
 */
const CONTEXT_MODELS: Record<
  ContextName,
  { load: (f: Factors, t: number) => number; idio: number; overnight: number; liquid: boolean; look: Domain | 'fx' }
> = {
  equity: { load: (f, t) => f.market[t]!, idio: 0.0006, overnight: 0.35, liquid: true, look: 'Equities' },
  rates: { load: (f, t) => RATES_REFERENCE_DURATION * f.rates[t]!, idio: 0.0002, overnight: 0.55, liquid: false, look: 'Fixed Income' },
  gold: { load: (f, t) => f.gold[t]!, idio: 0.0004, overnight: 0.6, liquid: false, look: 'Commodities' },
  commodity: {
    load: (f, t) => -0.0001 + 0.6 * f.regime.futuresCarry + 0.5 * f.oil[t]! + 0.2 * f.agri[t]! + 0.1 * f.gold[t]! + 0.15 * f.metals[t]!,
    idio: 0.0015,
    overnight: 0.6,
    liquid: false,
    look: 'Commodities',
  },
  dollar: { load: (f, t) => f.fx[t]!, idio: 0.0004, overnight: 0.75, liquid: false, look: 'fx' },
};

export function contextModel(name: ContextName, rng: Rng, f: Factors): PricePath {
  const m = CONTEXT_MODELS[name];
  const e = idio(rng, f, m.idio);
  const ret: Returns = {
    r: combine(f.n, (t) => m.load(f, t) + e[t]!),
    gapJump: new Float64Array(f.n),
    overnight: m.overnight,
    volumeBeta: 0.3,
    liquid: m.liquid,
  };
  return pricePath(ret, rng, f.n, { rangeScale: m.liquid ? [0.75, 1.05] : [0.35, 1], volumeNoise: VOLUME_NOISE[m.look] });
}

/** Turns a day's returns into bars; the ranges say where the instrument sits between a single-venue and a consolidated feed. */
function pricePath(
  { r, gapJump, overnight, volumeBeta }: Returns,
  rng: Rng,
  n: number,
  look: { rangeScale: readonly [number, number]; volumeNoise: readonly [number, number] },
): PricePath {
  const logClose = new Float64Array(n);
  for (let t = 1; t < n; t++) logClose[t] = logClose[t - 1]! + r[t]!;
  const anchor = rng.uniform(Math.log(15), Math.log(400)) - logClose[n - 1]!;
  const out: PricePath = {
    open: new Float64Array(n),
    high: new Float64Array(n),
    low: new Float64Array(n),
    close: new Float64Array(n),
    volume: new Float64Array(n),
  };
  let ewmaVar = 0;
  for (let t = 1; t < Math.min(n, 21); t++) ewmaVar += r[t]! * r[t]! / 20;
  // Vendors differ: a single-venue feed (IEX) sees narrower ranges, noisier opens and far noisier volume than the
  // consolidated tape, so each instrument draws where it sits between the two.
  const rangeScale = rng.uniform(look.rangeScale[0], look.rangeScale[1]);
  const openNoise = rng.uniform(0, 0.3);
  const baseVolume = rng.uniform(9, 17);
  const volTrend = rng.uniform(-0.8, 0.8);
  const volRho = rng.uniform(0.3, 0.8);
  const volNoise = rng.uniform(look.volumeNoise[0], look.volumeNoise[1]);
  const spikeRate = rng.uniform(0, 0.05);
  let volState = 0;
  for (let t = 0; t < n; t++) {
    const sigma = Math.max(1e-5, Math.sqrt(ewmaVar));
    const rt = t === 0 ? 0 : r[t]!;
    const diffusive = rt - gapJump[t]!;
    const gap =
      gapJump[t]! +
      overnight * diffusive +
      Math.sqrt(overnight * (1 - overnight)) * sigma * rng.normal() +
      openNoise * sigma * Math.max(-4, Math.min(4, rng.studentT(3)));
    const intra = rt - gap;
    const s2 = (1 - overnight) * sigma * sigma;
    const upMax = 0.5 * (intra + Math.sqrt(intra * intra - 2 * s2 * Math.log(1 - rng.next())));
    const downMin = 0.5 * (intra - Math.sqrt(intra * intra - 2 * s2 * Math.log(1 - rng.next())));
    const up = Math.max(0, intra) + rangeScale * (upMax - Math.max(0, intra));
    const down = Math.min(0, intra) + rangeScale * (downMin - Math.min(0, intra));
    const lc = anchor + logClose[t]!;
    const lo = lc - intra;
    const open = tick(Math.exp(lo));
    const close = tick(Math.exp(lc));
    out.open[t] = open;
    out.close[t] = close;
    out.high[t] = Math.max(open, close, tick(Math.exp(lo + up)));
    out.low[t] = Math.min(open, close, tick(Math.exp(lo + down)));
    volState = volRho * volState + volNoise * Math.sqrt(1 - volRho * volRho) * rng.normal();
    // Volume answers the size of the move (and earnings); rare block trades spike it regardless.
    const block = rng.next() < spikeRate ? rng.uniform(1, 2.5) / Math.max(volumeBeta, 0.05) : 0;
    const shock = Math.min(4, Math.abs(rt) / sigma) - 0.8 + (gapJump[t] !== 0 ? 0.8 : 0) + block;
    out.volume[t] = Math.round(Math.exp(baseVolume + volTrend * (t / n - 0.5) + volState + volumeBeta * shock));
    ewmaVar = 0.94 * ewmaVar + 0.06 * rt * rt;
  }
  return out;
}
