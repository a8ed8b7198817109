import type { Domain } from '../domains.js';

/** What a leveraged or inverse fund multiplies (the simulator draws one when the universe does not name it). */
export type LeverageUnderlying = 'equity' | 'rates' | 'gold' | 'silver' | 'oil' | 'natgas';

/** One instrument of the built-in universe: its domain label and a finer sub-type the simulator models. */
export interface UniverseEntry {
  ticker: string;
  class: Domain;
  subtype: Subtype;
  /** What a leveraged or inverse fund tracks, so the simulator gives it its real underlying. */
  underlying?: LeverageUnderlying;
}

/**
 * Sub-types, after the asset categories of the original project. Each one has its own simulator model
 * (see simulator.ts); the domain is what the router must predict.
 */
export const SUBTYPES = {
  Equities: ['stock', 'index-etf'],
  'Fixed Income': [
    'treasury-short',
    'treasury-long',
    'aggregate',
    'tips',
    'credit-ig',
    'credit-hy',
    'muni',
    'cash-like',
  ],
  Commodities: ['precious-metals', 'industrial-metals', 'energy', 'agriculture', 'broad-basket'],
  Derivatives: ['leveraged-2x', 'leveraged-3x', 'inverse', 'volatility-long', 'volatility-short', 'fx-trust'],
} as const satisfies Record<Domain, readonly string[]>;

export type Subtype = (typeof SUBTYPES)[Domain][number];

/** Sub-type → domain, for every sub-type. */
export const SUBTYPE_CLASS: Readonly<Record<Subtype, Domain>> = Object.fromEntries(
  (Object.entries(SUBTYPES) as [Domain, readonly Subtype[]][]).flatMap(([cls, subs]) => subs.map((s) => [s, cls])),
) as Record<Subtype, Domain>;

export function isSubtype(name: string): name is Subtype {
  return Object.prototype.hasOwnProperty.call(SUBTYPE_CLASS, name);
}

const e = (ticker: string, cls: Domain, subtype: Subtype, underlying?: LeverageUnderlying): UniverseEntry =>
  underlying === undefined ? { ticker, class: cls, subtype } : { ticker, class: cls, subtype, underlying };
const EQ = 'Equities';
const FI = 'Fixed Income';
const CO = 'Commodities';
const DE = 'Derivatives';

/** The configured market universe: 12 tickers per domain, common US-listed names. */
export const DEFAULT_UNIVERSE: UniverseEntry[] = [
  e('AAPL', EQ, 'stock'),
  e('MSFT', EQ, 'stock'),
  e('GOOGL', EQ, 'stock'),
  e('AMZN', EQ, 'stock'),
  e('NVDA', EQ, 'stock'),
  e('META', EQ, 'stock'),
  e('TSLA', EQ, 'stock'),
  e('JPM', EQ, 'stock'),
  e('JNJ', EQ, 'stock'),
  e('XOM', EQ, 'stock'),
  e('SPY', EQ, 'index-etf'),
  e('QQQ', EQ, 'index-etf'),

  e('TLT', FI, 'treasury-long'),
  e('IEF', FI, 'treasury-long'),
  e('SHY', FI, 'treasury-short'),
  e('AGG', FI, 'aggregate'),
  e('BND', FI, 'aggregate'),
  e('LQD', FI, 'credit-ig'),
  e('HYG', FI, 'credit-hy'),
  e('TIP', FI, 'tips'),
  e('MUB', FI, 'muni'),
  e('BIL', FI, 'cash-like'),
  e('SHV', FI, 'cash-like'),
  e('JNK', FI, 'credit-hy'),

  e('GLD', CO, 'precious-metals'),
  e('SLV', CO, 'precious-metals'),
  e('USO', CO, 'energy'),
  e('UNG', CO, 'energy'),
  e('DBA', CO, 'agriculture'),
  e('DBC', CO, 'broad-basket'),
  e('CORN', CO, 'agriculture'),
  e('WEAT', CO, 'agriculture'),
  e('PDBC', CO, 'broad-basket'),
  e('GLDM', CO, 'precious-metals'),
  e('IAU', CO, 'precious-metals'),
  e('DBO', CO, 'energy'),
  e('DBB', CO, 'industrial-metals'),
  e('CPER', CO, 'industrial-metals'),

  e('VXX', DE, 'volatility-long'),
  e('UVXY', DE, 'volatility-long'),
  e('SVXY', DE, 'volatility-short'),
  e('TQQQ', DE, 'leveraged-3x', 'equity'),
  e('SQQQ', DE, 'inverse', 'equity'),
  e('SPXL', DE, 'leveraged-3x', 'equity'),
  e('SDS', DE, 'inverse', 'equity'),
  e('SSO', DE, 'leveraged-2x', 'equity'),
  e('UUP', DE, 'fx-trust'),
  e('FXE', DE, 'fx-trust'),
  e('FXY', DE, 'fx-trust'),
  e('QLD', DE, 'leveraged-2x', 'equity'),
];

const BY_TICKER = new Map(DEFAULT_UNIVERSE.map((u) => [u.ticker, u]));

/** Domain and sub-type of a ticker of the built-in universe (case-insensitive), or undefined. */
export function knownClass(ticker: string): { class: Domain; subtype: Subtype; underlying?: LeverageUnderlying } | undefined {
  const u = BY_TICKER.get(ticker.toUpperCase());
  if (!u) return undefined;
  const { ticker: _ticker, ...known } = u;
  return known;
}

/** Three-letter codes of sub-types in synthetic tickers (`SIM-DE-L3X-007`); short so they pass validateTicker. */
export const SUBTYPE_CODE: Readonly<Record<Subtype, string>> = {
  stock: 'STK',
  'index-etf': 'IDX',
  'treasury-short': 'TSH',
  'treasury-long': 'TLG',
  aggregate: 'AGG',
  tips: 'TIP',
  'credit-ig': 'CIG',
  'credit-hy': 'CHY',
  muni: 'MUN',
  'cash-like': 'CSH',
  'precious-metals': 'PMT',
  'industrial-metals': 'IMT',
  energy: 'ENR',
  agriculture: 'AGR',
  'broad-basket': 'BSK',
  'leveraged-2x': 'L2X',
  'leveraged-3x': 'L3X',
  inverse: 'INV',
  'volatility-long': 'VOL',
  'volatility-short': 'SVL',
  'fx-trust': 'FXT',
};

const CLASS_CODE: Readonly<Record<Domain, string>> = {
  Equities: 'EQ',
  'Fixed Income': 'FI',
  Commodities: 'CO',
  Derivatives: 'DE',
};

const SIM_TICKER = /^SIM-(EQ|FI|CO|DE)-([A-Z0-9]{3})-(\d{1,4})$/;

/** Synthetic ticker of the `index`-th simulated instrument of a sub-type, e.g. `SIM-FI-CSH-003`. */
export function simTicker(subtype: Subtype, index: number): string {
  return `SIM-${CLASS_CODE[SUBTYPE_CLASS[subtype]]}-${SUBTYPE_CODE[subtype]}-${String(index).padStart(3, '0')}`;
}

/** Domain and sub-type encoded in a synthetic ticker, or undefined when it is not one. */
export function parseSimTicker(ticker: string): { class: Domain; subtype: Subtype } | undefined {
  const m = SIM_TICKER.exec(ticker.toUpperCase());
  if (!m) return undefined;
  const sub = (Object.keys(SUBTYPE_CODE) as Subtype[]).find((s) => SUBTYPE_CODE[s] === m[2]);
  if (sub === undefined || CLASS_CODE[SUBTYPE_CLASS[sub]] !== m[1]) return undefined;
  return { class: SUBTYPE_CLASS[sub], subtype: sub };
}
