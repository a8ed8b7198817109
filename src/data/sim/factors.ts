import type { Rng } from '../../util/random.js';
import { RECENT, type Regime } from './regimes.js';

/**
 * Common factors of the simulated market, one value per business day. Returns are daily log returns; `vix` is the
 * log level of a volatility index. The regime (regimes.ts) sets their levels; the `recent` one is calibrated to
 * 2015–2025 daily data: S&P 500 ≈ 1.1 %, 1-year-duration Treasury return ≈ 0.06 %, gold ≈ 0.95 %, WTI front month
 * ≈ 2.3 %, grains ≈ 1.3 %, dollar ≈ 0.45 %.
 */
export interface Factors {
  n: number;
  /** The market regime the history was drawn from (instrument models read its carry and idiosyncratic scale). */
  regime: Regime;
  /** 1 on stress days (shared by all factors: crises hit every market at once). */
  stress: Uint8Array;
  /** Equity market (broad index). */
  market: Float64Array;
  /** Conditional daily volatility of the market, for the products that track its variance. */
  marketVol: Float64Array;
  /** Treasury return per year of duration (i.e. minus the daily yield change) at IEF's duration, 7.5 years. */
  rates: Float64Array;
  /**
   * Yield-curve shape, in the units of `rates`: how far the yields of other maturities move apart from the 7–10 year
   * one (see `treasuryReturn`). Without it every Treasury fund would be an exact multiple of IEF (correlation 1.00),
   * where the development data shows TLT, VGLT and TLH at 0.91–0.92 and SHY at 0.85.
   */
  curve: Float64Array;
  /** Credit-spread return (positive when spreads tighten), unit scale ≈ 0.3 %. */
  credit: Float64Array;
  gold: Float64Array;
  oil: Float64Array;
  agri: Float64Array;
  /**
   * Industrial metals (copper, aluminium, zinc, nickel): ≈ 1.2 %/day, with the market, oil and gold in part and
   * against the dollar (DBB 2020–2025 on the development data: SPY +0.29, GLD +0.36, DBC +0.55, UUP −0.38).
   */
  metals: Float64Array;
  /** Dollar index. */
  fx: Float64Array;
  /** Log level of the volatility index (≈ ln 17 when calm). */
  vix: Float64Array;
}

/** GJR-GARCH(1,1) on unit-variance shocks: volatility clusters, and falls raise it more than rises do. */
export class Garch {
  private h = 1;
  private readonly omega: number;

  constructor(
    private readonly alpha: number,
    private readonly beta: number,
    private readonly gamma = 0,
  ) {
    this.omega = Math.max(1e-4, 1 - alpha - beta - Math.abs(gamma) / 2);
  }

  /** Multiplier of the long-run volatility for the next day. */
  scale(): number {
    return Math.sqrt(this.h);
  }

  /** Feeds the standardised shock of the day just drawn. */
  update(z: number): void {
    // gamma > 0 weights falls (equities), gamma < 0 weights rises (havens) by |gamma|.
    const a = this.alpha + (this.gamma >= 0 ? (z < 0 ? this.gamma : 0) : z > 0 ? -this.gamma : 0);
    this.h = Math.min(25, this.omega + a * z * z * this.h + this.beta * this.h);
  }
}

const BURN_IN = 250;

/** Daily volatility of the industrial-metals factor (LME copper and DBB 2010–2025: 1.1–1.5 %). */
const METALS_VOL = 0.012;

/**
 * How log VIX answers a standardised market shock z: harder on down days (VIX futures funds show a downside beta
 * about twice their upside beta against SPY on the development data: VXX −3.65 / −1.83, SVXY 2.23 / 0.88), centred so
 * the asymmetry does not lift the VIX level (E|z| ≈ 0.76 for the standardised t(7) shock).
 */
const VIX_DOWN = 1.4;
const VIX_UP = 0.5;
const vixResponse = (z: number): number => (z < 0 ? VIX_DOWN : VIX_UP) * z + ((VIX_DOWN - VIX_UP) * 0.76) / 2;

/** Duration of the rates reference market (IEF): the maturity at which `curve` does not move yields. */
export const RATES_REFERENCE_DURATION = 7.5;

/**
 * Return of a Treasury portfolio of duration `dur` on day t: the level move (`rates`) plus the curve move, weighted by
 * how far the duration sits from IEF's; the short end answers the curve harder (policy moves it on its own).
 */
export function treasuryReturn(f: Factors, t: number, dur: number): number {
  const w = (dur - RATES_REFERENCE_DURATION) / (dur < RATES_REFERENCE_DURATION ? 4 : 10);
  return dur * shortEndScale(f, dur) * (f.rates[t]! + w * f.curve[t]!);
}

/**
 * How much of the 7–10 year yield move reaches a maturity of `dur` years: all of it, except where policy rates are
 * pinned (the regime's `shortEndStill`), where the move fades towards the short end.
 */
export function shortEndScale(f: Factors, dur: number): number {
  const still = f.regime.shortEndStill;
  return still > 0 && dur < RATES_REFERENCE_DURATION ? 1 - still * (1 - dur / RATES_REFERENCE_DURATION) : 1;
}

/** A sell-off episode under way: its age in days, length, peak volatility multiplier and the market's total fall. */
interface Episode {
  age: number;
  length: number;
  peak: number;
  fall: number;
}

/**
 * Volatility multiplier of day `age` of an episode: up to its peak over the first five days (2020-02-24 … 03-16,
 * 2025-04-03 … 04-08), then a decay with a third of the episode's length as time constant.
 */
export function episodeMultiplier(e: Episode): number {
  const rise = e.age < 5 ? (e.age + 1) / 5 : Math.exp(-(e.age - 5) / (e.length / 3));
  return 1 + (e.peak - 1) * rise;
}

/**
 * Sell-off episodes of one history (regime `episodeRate`, `episodePeak`), drawn by their own random stream so that
 * every other factor of a seed is the same with or without them. Returns per day (burn-in included) the volatility
 * multiplier (1 outside an episode) and the fall of the market that day (a log return ≤ 0: a third of the episode
 * carries the fall, the rest gives a third of it back).
 */
function drawEpisodes(rng: Rng, total: number, R: Regime): { mult: Float64Array; drift: Float64Array } {
  const mult = new Float64Array(total).fill(1);
  const drift = new Float64Array(total);
  let e: Episode | undefined;
  for (let i = 0; i < total; i++) {
    if (e === undefined && rng.next() < R.episodeRate) {
      const peak = rng.uniform(R.episodePeak[0], R.episodePeak[1]);
      // 2018-02: −10 % in 9 days; 2015-08: −12 %; 2020-03: −34 % in 23 days; 2025-04: −19 %.
      e = { age: 0, length: Math.round(rng.uniform(20, 70)), peak, fall: rng.uniform(0.04, 0.08) * peak };
    }
    if (e === undefined) continue;
    mult[i] = episodeMultiplier(e);
    const third = e.length / 3;
    drift[i] = e.age < third ? -e.fall / third : (e.fall / 3) / (e.length - third);
    if (++e.age >= e.length) e = undefined;
  }
  return { mult, drift };
}

/**
 * The factors of one market history in `regime`; `curveRng` draws the yield-curve factor apart from the rest, so the
 * other factors of a seed are the same with or without it; `episodeRng` (when given) draws sell-off episodes, and
 * `metalsRng` (when given) the industrial-metals factor (0 without it), each on its own stream in the same way.
 */
export function buildFactors(rng: Rng, n: number, curveRng: Rng, regime: Regime = RECENT, episodeRng?: Rng, metalsRng?: Rng): Factors {
  const total = n + BURN_IN;
  const R = regime;
  const f: Factors = {
    n,
    regime,
    stress: new Uint8Array(n),
    market: new Float64Array(n),
    marketVol: new Float64Array(n),
    rates: new Float64Array(n),
    curve: new Float64Array(n),
    credit: new Float64Array(n),
    gold: new Float64Array(n),
    oil: new Float64Array(n),
    agri: new Float64Array(n),
    metals: new Float64Array(n),
    fx: new Float64Array(n),
    vix: new Float64Array(n),
  };
  const gm = new Garch(0.01, 0.9, 0.1);
  // Treasuries: smooth, persistent, symmetric volatility (kurtosis ≈ 3.5 in 2020–2025 TLT); gold: almost no
  // clustering (|r| autocorrelation ≈ 0) but sharp sell-offs (skew ≈ −0.5).
  const gr = new Garch(0.03, 0.95);
  const gc = new Garch(0.08, 0.86, 0.06);
  // Gold is a haven: its volatility rises after up-moves (negative gamma), the mirror of equities.
  const gg = new Garch(0.04, 0.9, -0.04);
  const go = new Garch(0.02, 0.9, 0.08);
  const ga = new Garch(0.05, 0.9);
  const gf = new Garch(0.04, 0.93);
  const rateMarketCorr = rng.uniform(R.rateMarketCorr[0], R.rateMarketCorr[1]);
  // Cross-asset links of the dollar and gold, drawn per history because they change with the era (the dollar rose
  // with stocks in parts of 1999–2007 and fell with them since; gold followed real yields more in some decades than in
  // others). The ranges centre on the 2020–2025 daily correlations of the development data: UUP against SPY −0.35,
  // IEF −0.35, GLD −0.47, DBC −0.23; GLD against IEF +0.37. Without them the simulated dollar moved with nothing and
  // every simulated asset had a dollar correlation near 0, where real ones sit near −0.3 (features corr_dollar_250).
  const fxMarket = rng.uniform(R.fxMarket[0], R.fxMarket[1]);
  const fxRates = rng.uniform(-0.45, 0);
  const fxGold = rng.uniform(-0.45, -0.15);
  const fxOil = rng.uniform(-0.25, 0);
  const fxOwn = Math.sqrt(1 - fxMarket ** 2 - fxRates ** 2 - fxGold ** 2 - fxOil ** 2);
  const goldRates = rng.uniform(R.goldRates[0], R.goldRates[1]);
  const goldOwn = Math.sqrt(1 - R.goldMarket ** 2 - goldRates ** 2);
  const oilOwn = Math.sqrt(1 - R.oilMarket ** 2);
  const agriOwn = Math.sqrt(Math.max(0, 1 - R.agriMarket ** 2 - 0.1 ** 2));
  const vixMean = Math.log(R.vixLevel);
  // Industrial metals: their own shock (drawn by `metalsRng`, so every other factor of a seed is the same with or
  // without them) plus links to the market, oil, gold and the dollar drawn per history around DBB's 2020–2025 ones.
  // Without `metalsRng` the factor stays 0.
  const gmt = new Garch(0.05, 0.9, 0.03);
  const metalsMarket = metalsRng?.uniform(0.2, 0.45) ?? 0;
  const metalsOil = metalsRng?.uniform(0.15, 0.3) ?? 0;
  const metalsGold = metalsRng?.uniform(0.25, 0.45) ?? 0;
  const metalsFx = -(metalsRng?.uniform(0.1, 0.35) ?? 0);
  const metalsOwn = Math.sqrt(1 - metalsMarket ** 2 - metalsOil ** 2 - metalsGold ** 2 - metalsFx ** 2);
  const episodes = episodeRng === undefined ? undefined : drawEpisodes(episodeRng, total, R);
  let stress = 0;
  let vix = vixMean;
  for (let i = 0; i < total; i++) {
    stress = stress === 0 ? (rng.next() < R.stressEnter ? 1 : 0) : rng.next() < R.stressExit ? 0 : 1;
    // An episode multiplies every volatility (equities fully, credit, oil, the havens and the dollar in part) and moves
    // the markets (stocks and oil down, the dollar up).
    const em = episodes?.mult[i] ?? 1;
    const ed = episodes?.drift[i] ?? 0;
    const part = (share: number): number => 1 + (em - 1) * share;
    const sm = (stress ? 1.3 : 0.95) * em;
    const zm = rng.studentT(7);
    const zr = rng.studentT(10);
    const zc = rng.studentT(4);
    const zg = rng.studentT(5);
    const zo = rng.studentT(6);
    const za = rng.studentT(7);
    const zf = rng.studentT(10);
    const zv = rng.studentT(4);
    const volM = R.equityVol * sm * gm.scale();
    let market = R.equityDrift + ed + volM * zm;
    let vixJump = 0;
    if (rng.next() < (stress ? 0.02 : 0.004)) {
      // Volatility spikes come with a market sell-off the same day.
      vixJump = rng.uniform(0.15, 0.5);
      market -= rng.uniform(1, 2) * volM;
    }
    const rates = R.rateDrift + R.rateVol * (stress ? 1.2 : 0.97) * part(0.4) * gr.scale() * (rateMarketCorr * zm + Math.sqrt(1 - rateMarketCorr ** 2) * zr);
    const credit = 0.003 * R.creditVolScale * (stress ? 2.5 : 0.8) * part(0.6) * gc.scale() * (0.6 * zm + 0.8 * zc);
    let gold = R.goldDrift + R.goldVol * (stress ? 1.2 : 0.97) * part(0.4) * gg.scale() * (R.goldMarket * zm + goldRates * zr + goldOwn * zg);
    if (rng.next() < 0.006) gold -= rng.uniform(2, 4) * R.goldVol;
    let oil = R.oilDrift + 1.2 * ed + R.oilVol * (stress ? 1.5 : 0.9) * part(0.7) * go.scale() * (R.oilMarket * zm + oilOwn * zo);
    // Oil shocks are mostly crashes (skew ≈ −0.6 for USO 2020–2025).
    if (rng.next() < 0.006) oil += (rng.next() < 0.75 ? -1 : 1) * Math.abs(rng.normal()) * 2 * R.oilVol;
    const agri = R.agriVol * (stress ? 1.3 : 0.95) * part(0.3) * ga.scale() * (R.agriMarket * zm + 0.1 * zo + agriOwn * za);
    // Metals follow oil's drift by half (the commodity boom and collapse moved both) and fall in sell-offs.
    const zmt = metalsRng?.studentT(5) ?? 0;
    const metals =
      metalsRng === undefined
        ? 0
        : 0.5 * R.oilDrift + 0.8 * ed +
          METALS_VOL * (stress ? 1.3 : 0.95) * part(0.6) * gmt.scale() * (metalsMarket * zm + metalsOil * zo + metalsGold * zg + metalsFx * zf + metalsOwn * zmt);
    const fx = R.fxDrift - 0.25 * ed + R.fxVol * (stress ? 1.4 : 0.95) * part(0.5) * gf.scale() * (fxMarket * zm + fxRates * zr + fxGold * zg + fxOil * zo + fxOwn * zf);
    // Log VIX mean-reverts (half-life ≈ 14 days) and moves against the market (corr ≈ −0.75), about twice as hard
    // when the market falls as when it rises (the spot–volatility asymmetry).
    vix += 0.05 * (vixMean + (stress ? 0.7 : 0) + Math.log(em) - vix) + 0.07 * (-0.75 * vixResponse(zm) + 0.66 * zv) + vixJump;
    gm.update(zm);
    gr.update(zr);
    gc.update(zc);
    gg.update(zg);
    go.update(zo);
    ga.update(za);
    gf.update(zf);
    gmt.update(zmt);
    const t = i - BURN_IN;
    if (t < 0) continue;
    f.stress[t] = stress;
    f.market[t] = market;
    f.marketVol[t] = volM;
    f.rates[t] = rates;
    // ≈ 0.48 of the level's volatility: TLT's correlation with IEF comes out near 0.92, SHY's near 0.85.
    f.curve[t] = 0.00029 * (R.rateVol / RECENT.rateVol) * (stress ? 1.2 : 0.97) * curveRng.studentT(6);
    f.credit[t] = credit;
    f.gold[t] = gold;
    f.oil[t] = oil;
    f.agri[t] = agri;
    f.metals[t] = metals;
    f.fx[t] = fx;
    f.vix[t] = vix;
  }
  return f;
}
