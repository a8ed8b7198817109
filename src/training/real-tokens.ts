/**
 * Training tokens from a real labelled folder (`<TICKER>.csv` and `labels.csv`, as `npm run evaluate` reads it),
 * mixed into the simulator's training set. Real series carry what no simulator has (a vendor's bars, a fund's own
 * quirks, the market's real links), but only of the folder's tickers and period, so they are a minority of the
 * training tokens and every figure on that folder must then be cross-fitted (`crossfit.ts`: no ticker scored by a
 * router that trained on it).
 *
 * Each ticker gives its whole series `repeat` times and `listings` new-listing copies: its first L bars, L drawn
 * log-uniform in [MIN_HISTORY_BARS, 400] from (seed, ticker), so a real fund's first months are in training too.
 */
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { computeFeatures, MIN_HISTORY_BARS } from '../data/features/compute.js';
import type { Bar, FeatureSeries } from '../data/types.js';
import type { Hidden } from '../router/layout.js';
import { lruEntry, lruPromise } from '../util/lru.js';
import { Rng } from '../util/random.js';
import { degradeContext } from '../data/sim/simulator.js';
import type { MarketContext } from '../data/features/context.js';
import { loadLabelledBars, type LabelledBars } from './evaluate.js';
import { assembleTokens, chunkedTokenSet, tokenChunks, type TokenSet } from './tokens.js';
import { sharedArray } from '../util/shared-memory.js';
import { PRIORITY, trainingWorkPool } from './work-pool.js';

/** A real labelled folder in the training set (`TrainConfig.data.real`). */
export interface RealTrainingData {
  /** Folder of `<TICKER>.csv` with `labels.csv` (or `labelsFile`). */
  dataDir: string;
  labelsFile?: string;
  /** Second folder for the context series the data folder lacks. */
  contextDir?: string;
  /** Tickers left out (the fold a cross-fitted figure scores). @defaultValue none */
  exclude?: string[];
  /** Copies of each ticker's whole series. */
  repeat: number;
  /** New-listing copies per ticker (its first 60–400 bars). */
  listings: number;
  /**
   * Share of the copies (whole and new-listing) that see a degraded context, as the simulator's instruments do
   * (`degradeContext`: none at all, each series missing with probability ½, or context only after a random date),
   * drawn per copy from (seed, ticker). @defaultValue 0
   */
  contextDropout?: number;
  /** Share of those degraded contexts drawn in the reference funds' listing order (`degradeContext`). @defaultValue 0 */
  contextInceptionShare?: number;
}

/** The longest new-listing copy, in bars (as the simulator's new listings). */
const LISTING_MAX_BARS = 400;

export type Row = { ticker: string; label: number; series: FeatureSeries };

/**
 * Each ticker's rows (its copies' features), by what they are drawn from: the recipe's settings and the context
 * series (`recipeKey`), then the ticker, its label and its bars (`tickerKey`). A cross-fit asks for the same folder
 * once per fold and member, each time without a fold's tickers; every other ticker's rows are the same then (its
 * draws come from (seed, ticker) alone), so they are computed once per member seed. Three recipes are kept: the
 * members of an ensemble.
 */
const rowCache = new Map<string, Map<string, Promise<Row[]>>>();
const ROW_CACHE_RECIPES = 3;

/** Forgets every cached row (tests: the next call computes every ticker's features again). */
export function clearRealTokenCache(): void {
  rowCache.clear();
  folderCache.clear();
}

const digest = (parts: readonly (string | ArrayBufferView)[]): string => {
  const h = createHash('sha256');
  for (const p of parts) h.update(typeof p === 'string' ? p : new Uint8Array(p.buffer, p.byteOffset, p.byteLength));
  return h.digest('base64');
};

function contextKey(context: MarketContext): string {
  return digest(context.flatMap((c) => (c === null ? ['-'] : [c.ticker, c.dates, c.logClose])));
}

function tickerKey(ticker: string, label: number, bars: readonly Bar[]): string {
  const v = new Float64Array(bars.length * 6);
  bars.forEach((b, i) => v.set([b.open, b.high, b.low, b.close, b.adjClose, b.volume ?? Number.NaN], i * 6));
  return `${ticker}|${label}|${digest([bars.map((b) => b.date).join(','), v])}`;
}

/**
 * Tokens of a real labelled folder for training (see the module comment); `seed` draws the listing lengths. The
 * tickers' features are computed on the process's pool of `threads` worker threads (`features.task.ts`, tasks of
 * `priority`; 1: here), each ticker's once per recipe even when several callers (a cross-fit's folds) ask at once: the
 * same bytes either way.
 */
export async function realTrainingTokens(
  hidden: Hidden,
  data: RealTrainingData,
  seed: number,
  warn?: (m: string) => void,
  threads = 1,
  priority: number = PRIORITY.training,
): Promise<TokenSet> {
  for (const [name, v] of [['repeat', data.repeat], ['listings', data.listings]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 1000) throw new RangeError(`Expected integer in [0, 1000] for real.${name} but received ${String(v)}`);
  }
  const dropout = data.contextDropout ?? 0;
  if (!(dropout >= 0 && dropout <= 1)) throw new RangeError(`Expected a share in [0, 1] for real.contextDropout but received ${String(dropout)}`);
  const inceptionShare = data.contextInceptionShare ?? 0;
  if (!(inceptionShare >= 0 && inceptionShare <= 1)) {
    throw new RangeError(`Expected a share in [0, 1] for real.contextInceptionShare but received ${String(data.contextInceptionShare)}`);
  }
  const { dir, usable, keys, warnings } = await labelledFolder(data);
  for (const w of warnings) warn?.(w);
  for (const f of dir.failed) warn?.(`real training data: ${f.ticker} left out (${f.reason})`);
  const recipeKey = JSON.stringify([hidden, seed, data.repeat, data.listings, dropout, inceptionShare, contextKey(dir.context)]);
  const cached = lruEntry(rowCache, recipeKey, ROW_CACHE_RECIPES, () => new Map<string, Promise<Row[]>>());
  const missing = usable.filter((_, i) => !cached.has(keys[i]!));
  const pool = missing.length > 1 ? trainingWorkPool(threads) : undefined;
  const { repeat, listings } = data;
  usable.forEach(({ ticker, label, bars }, i) => {
    if (cached.has(keys[i]!)) return;
    const args: TickerRowsArgs = { hidden, ticker, label, bars, context: dir.context, seed, repeat, listings, dropout, inceptionShare };
    // On a thread, a features.task.ts task (the same tickerRows).
    const made = pool !== undefined ? pool.run<Row[]>('features.task', { kind: 'rows', args }, priority) : Promise.resolve().then(() => tickerRows(args));
    // A failed ticker leaves the cache, so a later call computes it again.
    made.catch(() => cached.delete(keys[i]!));
    cached.set(keys[i]!, made);
  });
  // Callers that asked at the same time await these tasks too; the pool is the process's, so one ticker's failure
  // cuts none of them short.
  const rows = (await Promise.all(keys.map((k) => cached.get(k)!))).flat();
  if (rows.length === 0) {
    throw new RangeError(`Expected labelled tickers with at least ${MIN_HISTORY_BARS} bars for real training data in ${dir.dataDir} but received none`);
  }
  // Each row's series is a chunk of the set (the rows are cached and shared by the callers): nothing is copied here.
  const perRow = rows.map(({ ticker, label, series: { x, vol, risk } }) => ({
    seed: 0,
    x,
    vol,
    risk,
    rows: [{ ticker, label, subtype: 'real', family: 'recent' as const, days: vol.length }],
  }));
  return assembleTokens(hidden, perRow, { seedNames: false });
}

/** A real folder as read for training: its bars and context, the tickers with enough bars and their row keys. */
interface LabelledFolder {
  dir: LabelledBars;
  usable: LabelledBars['loaded'];
  keys: string[];
  /** What reading it warned, told again to every caller. */
  warnings: string[];
}

/**
 * The folders read for training, by what was asked (folder, labels, context folder, tickers left out) and the size and
 * time of every file read: a command that trains many routers on one folder (an ensemble, each fold of its cross-fit)
 * parses its files and hashes its tickers once per set of left-out tickers instead of once per router, on the thread
 * whose turns the routers' training calls wait for. A file changed in between is read again.
 */
const folderCache = new Map<string, Promise<LabelledFolder>>();
const FOLDER_CACHE_SIZE = 8;
const folderStats = { hits: 0, misses: 0 };

/** How often a real folder was found read already, and how often it was read. */
export function realFolderCacheStats(): { hits: number; misses: number } {
  return { ...folderStats };
}

async function labelledFolder(data: RealTrainingData): Promise<LabelledFolder> {
  const opts = {
    dataDir: data.dataDir,
    ...(data.labelsFile !== undefined ? { labelsFile: data.labelsFile } : {}),
    ...(data.contextDir !== undefined ? { contextDir: data.contextDir } : {}),
    ...(data.exclude !== undefined ? { exclude: [...data.exclude].map((t) => t.toUpperCase()).sort() } : {}),
  };
  const key = JSON.stringify([opts, filesSignature([data.dataDir, data.labelsFile, data.contextDir])]);
  // A failed read leaves the cache: the next caller tries again.
  return lruPromise(
    folderCache,
    key,
    FOLDER_CACHE_SIZE,
    async () => {
      const warnings: string[] = [];
      const dir = await loadLabelledBars({ ...opts, warn: (m) => warnings.push(m) });
      const usable = dir.loaded.filter(({ bars }) => bars.length >= MIN_HISTORY_BARS);
      return { dir, usable, keys: usable.map(({ ticker, label, bars }) => tickerKey(ticker, label, bars)), warnings };
    },
    folderStats,
  );
}

/**
 * Name, size and modification time of every file in `paths` (a folder's files, or one file), absent ones skipped.
 * Synchronous: a few hundred stats take about a millisecond here, where awaited one by one each would wait for a
 * thread of Node's pool, which the routers' training calls hold.
 */
function filesSignature(paths: readonly (string | undefined)[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (p === undefined) continue;
    const root = path.resolve(p);
    const info = statSync(root, { throwIfNoEntry: false });
    if (info === undefined) continue;
    const files = info.isDirectory() ? readdirSync(root).sort().map((f) => path.join(root, f)) : [root];
    for (const f of files) {
      const st = f === root ? info : statSync(f, { throwIfNoEntry: false });
      if (st !== undefined) out.push(`${f}:${st.size}:${st.mtimeMs}`);
    }
  }
  return out;
}

/** What one ticker's training rows are drawn from (`tickerRows`). */
export interface TickerRowsArgs {
  hidden: Hidden;
  ticker: string;
  label: number;
  bars: Bar[];
  context: MarketContext;
  seed: number;
  repeat: number;
  listings: number;
  dropout: number;
  inceptionShare: number;
}

/** One ticker's copies: its whole series `repeat` times and `listings` new listings, contexts degraded as drawn. */
export function tickerRows({ hidden, ticker, label, bars, context, seed, repeat, listings, dropout, inceptionShare }: TickerRowsArgs): Row[] {
  const rows: Row[] = [];
  // Degraded contexts from their own stream, so the listing lengths are the same with or without them.
  const crng = Rng.derive(seed, `context:${ticker}`);
  const contextOf = (): MarketContext => (dropout > 0 && crng.next() < dropout ? degradeContext(context, crng, inceptionShare) : context);
  const whole = computeFeatures(ticker, bars, hidden, context);
  for (let r = 0; r < repeat; r++) {
    const ctx = contextOf();
    rows.push({ ticker, label, series: ctx === context ? whole : computeFeatures(ticker, bars, hidden, ctx) });
  }
  const rng = Rng.derive(seed, `listing:${ticker}`);
  for (let c = 0; c < listings; c++) {
    const n = Math.round(Math.exp(rng.uniform(Math.log(MIN_HISTORY_BARS), Math.log(LISTING_MAX_BARS))));
    rows.push({ ticker: `${ticker}:first${n}`, label, series: computeFeatures(ticker, bars.slice(0, Math.min(n, bars.length)), hidden, contextOf()) });
  }
  return rows;
}

/** Token sets one after another as one set, its parts kept (`joinTokenSets`). */
export interface JoinedTokenSet extends TokenSet {
  readonly parts: readonly TokenSet[];
}

/**
 * `parts` one after another as one token set (part 1's rows after part 0's, …), the parts kept. Labels and ticker
 * ranges are joined at once (a byte and a row per token or ticker); the series x, vol and risk (about 0.9 GB for the
 * shipped recipe's 6.4 million tokens) only when first read, straight from the parts' chunks (one copy, whether or not
 * a part has joined its own) into shared memory, which the batch feeders' threads read as it is. A trainer that hands
 * the device the chunks (`tokenChunks`, `NativeRouter.setTrainingSet`) never joins them on the host.
 */
export function joinTokenSets(parts: readonly TokenSet[]): JoinedTokenSet {
  if (parts.length === 0) throw new RangeError('Expected at least one token set to join but received none');
  const hidden = parts[0]!.hidden;
  if (parts.some((p) => p.hidden !== hidden)) throw new RangeError(`Expected token sets of one hidden size but received ${parts.map((p) => p.hidden).join(', ')}`);
  const total = parts.reduce((n, p) => n + p.size, 0);
  const labels = sharedArray(Uint8Array, total);
  const tickers: TokenSet['tickers'] = [];
  let at = 0;
  for (const p of parts) {
    labels.set(p.labels, at);
    for (const t of p.tickers) tickers.push(at === 0 ? t : { ...t, start: t.start + at, end: t.end + at });
    at += p.size;
  }
  const set = chunkedTokenSet(hidden, parts.flatMap((p) => tokenChunks(p)), labels, tickers, true);
  return Object.defineProperty(set, 'parts', { value: parts, enumerable: true }) as JoinedTokenSet;
}
