import { Rng } from '../../util/random.js';

/**
 * Market regimes the simulator draws its histories from. One history is one regime: its equity volatility and
 * drift, how often it is stressed, where the VIX sits, how rates move and with what sign against stocks, what gold,
 * oil, grains and the dollar do, and the carry of futures funds. A router trained on one period learns that period's
 * accidents (in a calm year an equity index fund moves like a bond fund, in 2016–2021 gold moved with long bonds);
 * trained across the families below it has to read what stays true in every one.
 *
 * Each family gives ranges, and every history draws its own values inside them. The ranges come from published
 * daily data of each period (realised volatility is the annualised standard deviation of daily log returns; VIX is
 * the CBOE index's yearly mean; yields are the US Treasury's constant-maturity series), cited per family below and
 * in models/README.md. `recent` is the simulator's own calibration to the development period (2020-07 … 2025-04),
 * the values every other family departs from.
 */

export const REGIME_FAMILIES = [
  'recent',
  'calm-bull',
  'dotcom-bust',
  'crisis-2008',
  'taper-2013',
  'commodity-boom',
  'commodity-collapse',
  'zero-rate',
  'rate-shock-2022',
  'gold-against-bonds',
  'dollar-swing',
  'crash-2020',
] as const;
export type RegimeFamily = (typeof REGIME_FAMILIES)[number];

export function isRegimeFamily(v: unknown): v is RegimeFamily {
  return typeof v === 'string' && (REGIME_FAMILIES as readonly string[]).includes(v);
}

/** The parameters of one market history (all returns are daily log returns). */
export interface Regime {
  family: RegimeFamily;
  /** Equity market drift per day. */
  equityDrift: number;
  /** Long-run daily volatility of the equity market outside stress. */
  equityVol: number;
  /** Chance per day that a calm market turns stressed, and that a stressed one calms down. */
  stressEnter: number;
  stressExit: number;
  /** Calm level of the volatility index (its mean outside stress). */
  vixLevel: number;
  /** Daily volatility of the Treasury return per year of duration (the daily yield change of the 7–10 year point). */
  rateVol: number;
  /** Treasury return per year of duration per day: minus the yearly yield change / 252 (rising yields: negative). */
  rateDrift: number;
  /** Range of the correlation of rates returns with the equity market (negative: bonds rally when stocks fall). */
  rateMarketCorr: readonly [number, number];
  /**
   * How still the short end of the curve is, 0 … 1: with policy rates pinned at zero, 1–3 year yields hardly move
   * while the 10-year still does (2-year yield daily s.d. 2012–2014 ≈ 1–2 bp against 5–6 bp at 10 years).
   */
  shortEndStill: number;
  /** Multiplier of the credit-spread factor's volatility. */
  creditVolScale: number;
  goldDrift: number;
  goldVol: number;
  /** Range of gold's loading on the rates shock (its correlation with Treasuries, before its own noise). */
  goldRates: readonly [number, number];
  goldMarket: number;
  oilDrift: number;
  oilVol: number;
  /** Loading of oil on the equity shock (≈ 0.35 is a correlation of 0.35). */
  oilMarket: number;
  /** Roll yield per day of a futures fund beyond its own: contango negative, backwardation positive. */
  futuresCarry: number;
  agriVol: number;
  agriMarket: number;
  /** Dollar drift per day (a strong-dollar year positive). */
  fxDrift: number;
  fxVol: number;
  /** Range of the dollar's loading on the equity shock. */
  fxMarket: readonly [number, number];
  /** Multiplier of every instrument's own (idiosyncratic) volatility: stock dispersion rises in crises. */
  idioScale: number;
  /**
   * Chance per day that a sell-off episode begins (see `episodeMultiplier` in factors.ts): a few weeks in which
   * equity volatility jumps to `episodePeak` times its level and decays, stocks and oil fall, credit spreads widen and
   * the dollar rises. Every period has them (2010-05, 2011-08, 2015-08, 2018-02, 2018-Q4, 2020-03, 2024-08, 2025-04),
   * and they are what a router trained on steady markets mistakes for leverage.
   */
  episodeRate: number;
  /** Range of the peak multiplier of equity volatility in an episode (2015-08: ≈ 4×, 2018-02: ≈ 4×, 2025-04: ≈ 3.5×). */
  episodePeak: readonly [number, number];
}

/** The development period's calibration (the values sim/factors.ts was tuned to), and the default of every source. */
export const RECENT: Regime = {
  family: 'recent',
  equityDrift: 0.0003,
  equityVol: 0.011,
  stressEnter: 0.006,
  stressExit: 0.03,
  vixLevel: 17,
  rateVol: 0.0006,
  rateDrift: 0,
  rateMarketCorr: [-0.35, 0.3],
  shortEndStill: 0,
  creditVolScale: 1,
  goldDrift: 0.0003,
  goldVol: 0.009,
  goldRates: [0.1, 0.45],
  goldMarket: 0.1,
  oilDrift: 0,
  oilVol: 0.023,
  oilMarket: 0.35,
  futuresCarry: 0,
  agriVol: 0.013,
  agriMarket: 0.08,
  fxDrift: 0,
  fxVol: 0.0045,
  fxMarket: [-0.45, 0.1],
  idioScale: 1,
  episodeRate: 1 / 800,
  episodePeak: [2, 3.5],
};

type Range = readonly [number, number];
/** A family: ranges for the numbers that differ from RECENT (a range is drawn per history; a number is fixed). */
type FamilySpec = { [K in Exclude<keyof Regime, 'family'>]?: Regime[K] extends readonly [number, number] ? Range : number | Range };

const Y = 252;
/** Per-day drift of a yearly log change. */
const perYear = (v: number): number => v / Y;
/** Per-day volatility of an annualised one. */
const annual = (v: number): number => v / Math.sqrt(Y);

const FAMILIES: Record<Exclude<RegimeFamily, 'recent'>, FamilySpec> = {
  // 2017 (S&P 500 realised volatility 6.7 %, VIX mean 11.1), 2005–2006 (≈ 10 %, VIX 12.8), 1993–1995 (≈ 8–10 %):
  // equity index funds move as little as aggregate bond funds, stock dispersion is low, the 10-year moves 3–5 bp a day.
  'calm-bull': {
    equityDrift: [perYear(0.08), perYear(0.2)],
    equityVol: [annual(0.065), annual(0.11)],
    stressEnter: 0.0008,
    vixLevel: [10.5, 13.5],
    rateVol: [0.00035, 0.0005],
    rateMarketCorr: [-0.4, 0.1],
    goldVol: [annual(0.09), annual(0.13)],
    oilVol: [annual(0.22), annual(0.3)],
    oilMarket: [0.05, 0.3],
    agriVol: [annual(0.13), annual(0.18)],
    agriMarket: [0, 0.1],
    fxVol: [annual(0.05), annual(0.075)],
    idioScale: [0.6, 0.85],
    // 2017 had none; 2018-02 ended it at 4× (VIX 11 → 37 in a week).
    episodeRate: 1 / 1500,
  },
  // 2000–2002: S&P 500 −9 %, −13 %, −23 % a year with realised volatility 22 %, 22 %, 26 % (VIX means 23–27); the
  // 10-year yield fell from 6.7 % to 3.8 % as stocks and Treasuries parted (correlation −0.3 … −0.6); technology
  // stocks swung two to three times as hard as the index.
  'dotcom-bust': {
    equityDrift: [perYear(-0.28), perYear(-0.08)],
    equityVol: [annual(0.19), annual(0.26)],
    stressEnter: 0.01,
    vixLevel: [21, 28],
    rateVol: [0.0006, 0.00075],
    rateDrift: [perYear(0.005), perYear(0.012)],
    rateMarketCorr: [-0.6, -0.25],
    goldDrift: [perYear(-0.05), perYear(0.2)],
    oilVol: [annual(0.38), annual(0.48)],
    oilMarket: [0, 0.25],
    fxMarket: [-0.1, 0.35],
    idioScale: [1.3, 1.8],
    episodeRate: 1 / 300,
  },
  // 2008 – early 2009: S&P 500 realised volatility 41 % for the year and 60–80 % in the fourth quarter, VIX mean 32.7
  // (peak 80.9), high-yield spreads from 5 % to 20 %, the 10-year yield from 4 % to 2.2 % (flight to quality:
  // stock–bond correlation −0.4 … −0.7), oil from $145 to $33, the dollar up 20 % in half a year.
  'crisis-2008': {
    equityDrift: [perYear(-0.6), perYear(-0.2)],
    equityVol: [annual(0.28), annual(0.42)],
    stressEnter: 0.02,
    stressExit: 0.015,
    vixLevel: [24, 34],
    rateVol: [0.0009, 0.0013],
    rateDrift: [perYear(0.006), perYear(0.015)],
    rateMarketCorr: [-0.7, -0.4],
    creditVolScale: [2, 3.2],
    goldDrift: [perYear(-0.05), perYear(0.2)],
    goldVol: [annual(0.26), annual(0.33)],
    oilDrift: [perYear(-1.2), perYear(-0.4)],
    oilVol: [annual(0.55), annual(0.75)],
    oilMarket: [0.35, 0.6],
    agriMarket: [0.15, 0.35],
    fxDrift: [perYear(0.05), perYear(0.2)],
    fxVol: [annual(0.1), annual(0.14)],
    fxMarket: [-0.65, -0.3],
    idioScale: [1.6, 2.3],
    // 2008-09 … 2008-11 on top of an already stressed year; 2002-07 and 2002-10 for the bust's lows.
    episodeRate: 1 / 200,
    episodePeak: [2, 3],
  },
  // 2013: the taper tantrum. S&P 500 +30 % at 11 % realised volatility (VIX mean 14.2) while the 10-year yield rose
  // from 1.6 % to 3.0 % (long Treasury funds −13 %) and gold fell 28 %, with bonds (gold–Treasury correlation +0.3 …
  // +0.5).
  'taper-2013': {
    equityDrift: [perYear(0.15), perYear(0.3)],
    equityVol: [annual(0.095), annual(0.13)],
    stressEnter: 0.002,
    vixLevel: [13, 16],
    rateVol: [0.0006, 0.0008],
    rateDrift: [perYear(-0.016), perYear(-0.008)],
    rateMarketCorr: [-0.1, 0.3],
    goldDrift: [perYear(-0.4), perYear(-0.15)],
    goldVol: [annual(0.18), annual(0.24)],
    goldRates: [0.3, 0.6],
    oilVol: [annual(0.17), annual(0.24)],
    idioScale: [0.8, 1],
  },
  // 2003 – mid 2008: oil from $30 to $140 (+25 … +40 % a year at 30–40 % volatility) in backwardation (futures
  // funds earned roll yield), grains doubling, commodities barely tied to stocks (S&P 500 – oil correlation ≈ 0),
  // the dollar index −8 % a year.
  'commodity-boom': {
    equityDrift: [perYear(0.03), perYear(0.15)],
    equityVol: [annual(0.1), annual(0.16)],
    vixLevel: [12, 18],
    goldDrift: [perYear(0.1), perYear(0.25)],
    oilDrift: [perYear(0.2), perYear(0.45)],
    oilVol: [annual(0.3), annual(0.4)],
    oilMarket: [-0.1, 0.15],
    futuresCarry: [0.0001, 0.0003],
    agriVol: [annual(0.18), annual(0.26)],
    agriMarket: [-0.05, 0.1],
    fxDrift: [perYear(-0.12), perYear(-0.04)],
  },
  // Mid 2014 – early 2016: oil from $107 to $26 at 35–50 % volatility in steep contango (USO lagged spot by 15–25 %
  // a year), grains −15 % a year and hardly tied to stocks, the dollar index +20 % over 2014–2015, gold −10 % a
  // year; late in the slide oil and stocks fell together (correlation ≈ 0.5 in 2015–2016).
  'commodity-collapse': {
    equityDrift: [perYear(-0.08), perYear(0.08)],
    equityVol: [annual(0.12), annual(0.17)],
    vixLevel: [14, 19],
    goldDrift: [perYear(-0.15), perYear(-0.03)],
    oilDrift: [perYear(-0.9), perYear(-0.4)],
    oilVol: [annual(0.35), annual(0.5)],
    oilMarket: [0.3, 0.6],
    futuresCarry: [-0.0012, -0.0004],
    agriMarket: [-0.05, 0.08],
    fxDrift: [perYear(0.06), perYear(0.14)],
    fxMarket: [-0.3, 0.05],
  },
  // 2010–2015 and 2020–2021: policy rates at zero. Bills and 1–3 year notes sit nearly still (2-year yield daily
  // s.d. ≈ 1–2 bp against 5–6 bp at 10 years), cash funds earn nothing, longer Treasuries still move.
  'zero-rate': {
    equityDrift: [perYear(0.05), perYear(0.2)],
    equityVol: [annual(0.12), annual(0.18)],
    vixLevel: [14, 19],
    rateVol: [0.0005, 0.0007],
    rateMarketCorr: [-0.5, -0.15],
    shortEndStill: [0.75, 0.92],
    goldRates: [0.2, 0.5],
  },
  // 2022: the S&P 500 −19 % at 24 % realised volatility (VIX mean 25.6) while the 10-year yield rose from 1.5 % to
  // 3.9 % (long Treasury funds −31 %): stocks and bonds fell together (correlation +0.3 … +0.6); the dollar index
  // +8 %; oil up and then down at 50 % volatility.
  'rate-shock-2022': {
    equityDrift: [perYear(-0.3), perYear(-0.1)],
    equityVol: [annual(0.2), annual(0.27)],
    stressEnter: 0.008,
    vixLevel: [22, 29],
    rateVol: [0.0009, 0.0012],
    rateDrift: [perYear(-0.028), perYear(-0.015)],
    rateMarketCorr: [0.3, 0.6],
    creditVolScale: [1.2, 1.6],
    goldDrift: [perYear(-0.08), perYear(0.05)],
    goldRates: [0.25, 0.55],
    oilVol: [annual(0.45), annual(0.55)],
    fxDrift: [perYear(0.04), perYear(0.12)],
    fxVol: [annual(0.08), annual(0.1)],
  },
  // Gold against bonds: 2022's second half and 2023–2024 (gold at records while real yields rose: gold–Treasury
  // correlation near 0 or below), 1999–2001 (central-bank selling): gold follows its own path.
  'gold-against-bonds': {
    goldDrift: [perYear(-0.1), perYear(0.3)],
    goldVol: [annual(0.12), annual(0.2)],
    goldRates: [-0.35, 0.05],
    goldMarket: 0.15,
  },
  // Strong- and weak-dollar years: 1999–2001 (+8 … +10 % a year, rising with stocks), 2003–2007 (−8 % a year),
  // 2014–2015 (+12 % a year), 2017 (−10 %): the dollar trends and its link to stocks changes sign.
  'dollar-swing': {
    fxDrift: [perYear(-0.12), perYear(0.12)],
    fxVol: [annual(0.07), annual(0.11)],
    fxMarket: [-0.2, 0.35],
  },
  // 2020: the S&P 500 fell 34 % in 23 trading days (19 Feb … 23 Mar) with one-month realised volatility above 80 % and
  // the VIX at a record 82.7 close (16 Mar; 29.3 the year's mean), then rose 68 % by December (realised volatility
  // 34 % for the year); the Fed cut to zero on 15 Mar (the short end pinned), the 10-year yield fell from 1.9 % to
  // 0.5 %, high-yield spreads went from 3.6 % to 10.9 %, WTI crude settled at −$37.63 on 20 Apr in record contango
  // (USO −67 % in the year), gold rose 25 % and the dollar index jumped 8 % in ten days of March before falling 7 %
  // over the year. Unlike 2008, the crash is an episode on a moderately volatile market, not a wild year: the
  // family is a 22–32 % market hit often by 3–4.5× sell-off episodes.
  'crash-2020': {
    // The rebound: the episodes (below) carry the falls, and give back only a third of them themselves.
    equityDrift: [perYear(0), perYear(0.35)],
    equityVol: [annual(0.2), annual(0.28)],
    stressEnter: 0.01,
    stressExit: 0.02,
    vixLevel: [24, 32],
    rateVol: [0.0006, 0.0009],
    rateDrift: [perYear(0.003), perYear(0.01)],
    rateMarketCorr: [-0.6, -0.1],
    shortEndStill: [0.7, 0.9],
    creditVolScale: [1.8, 2.8],
    goldDrift: [perYear(0.1), perYear(0.25)],
    goldVol: [annual(0.15), annual(0.22)],
    oilDrift: [perYear(-0.9), perYear(-0.2)],
    oilVol: [annual(0.6), annual(0.9)],
    oilMarket: [0.35, 0.6],
    futuresCarry: [-0.002, -0.0006],
    fxVol: [annual(0.07), annual(0.1)],
    fxMarket: [-0.6, -0.3],
    idioScale: [1.3, 1.9],
    episodeRate: 1 / 250,
    episodePeak: [3, 4.5],
  },
};

/** The parameters of one history of `family`, drawn from its ranges by `rng` (RECENT is returned as it is). */
export function drawRegime(family: RegimeFamily, rng: Rng): Regime {
  if (family === 'recent') return RECENT;
  const spec = FAMILIES[family];
  const out: Regime = { ...RECENT, family };
  for (const [key, value] of Object.entries(spec) as [keyof FamilySpec, number | Range][]) {
    const base = RECENT[key];
    if (Array.isArray(base)) {
      // A correlation range stays a range: the factor builder draws inside it.
      (out as unknown as Record<string, Range>)[key] = value as Range;
    } else {
      (out as unknown as Record<string, number>)[key] = typeof value === 'number' ? value : rng.uniform((value as Range)[0], (value as Range)[1]);
    }
  }
  return out;
}

/** The regime of the market history `marketSeed` of `family`: its own draws, apart from the factors' random stream. */
export function regimeOf(family: RegimeFamily, marketSeed: number): Regime {
  return drawRegime(family, Rng.derive(marketSeed, `regime:${family}`));
}
