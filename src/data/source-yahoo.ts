import YahooFinance from 'yahoo-finance2';
import type { FetchRange, SourceResult } from './types.js';
import { SourceError } from './errors.js';
import { cleanBars, type RawBar } from './clean.js';
import { barsNeeded, calendarWindow, resolveRange, trimToRange } from './range.js';
import { WARMUP_DAYS } from './features.js';
import { knownClass } from './universe.js';
import { sourceTicker } from './validate.js';
import type { DataSource } from './sources.js';

export interface YahooSourceOptions {
  /** HTTP client handed to yahoo-finance2. @defaultValue globalThis.fetch */
  fetch?: typeof fetch;
  /** Fewest clean bars accepted. @defaultValue WARMUP_DAYS + 1 */
  minBars?: number;
  /** Attempts after the first on HTTP 429/5xx and network errors. @defaultValue 3 */
  retries?: number;
  /** First back-off delay, doubled per retry. @defaultValue 500 */
  backoffMs?: number;
}

/** One quote of chart()'s array form, as far as this source reads it. */
interface ChartQuote {
  date: Date;
  open: number | null;
  high: number | null;
  low: number | null;
  close: number | null;
  volume: number | null;
  adjclose?: number | null;
}

interface ChartArray {
  meta: { gmtoffset?: number; dataGranularity?: string };
  quotes: ChartQuote[];
}

const silent = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {}, dir: () => {} };

/**
 * Maps chart() quotes to raw bars. Yahoo stamps a daily bar with the session's opening time in UTC; adding the
 * exchange's UTC offset gives the local trading day (a Tokyo bar would otherwise land on the previous date).
 */
export function chartQuotesToRows(quotes: readonly ChartQuote[], gmtoffset: number): RawBar[] {
  return quotes.map((q) => ({
    date: new Date(q.date.getTime() + gmtoffset * 1000).toISOString().slice(0, 10),
    open: q.open,
    high: q.high,
    low: q.low,
    close: q.close,
    // A missing adjclose column means none was sent (then close is all there is); a null entry is a missing value.
    adjClose: q.adjclose === undefined ? q.close : q.adjclose,
    volume: q.volume,
  }));
}

const status = (err: unknown): number | undefined => {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
};

/** Yahoo Finance daily bars through yahoo-finance2 `chart()`. */
export class YahooSource implements DataSource {
  readonly name = 'yahoo' as const;
  private readonly yf: InstanceType<typeof YahooFinance>;
  private readonly minBars: number;
  private readonly retries: number;
  private readonly backoffMs: number;

  constructor(opts: YahooSourceOptions = {}) {
    this.yf = new YahooFinance({
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
      logger: silent,
      versionCheck: false,
      suppressNotices: ['yahooSurvey'],
      validation: { logErrors: false, logOptionsErrors: false },
    });
    this.minBars = opts.minBars ?? WARMUP_DAYS + 1;
    this.retries = opts.retries ?? 3;
    this.backoffMs = opts.backoffMs ?? 500;
  }

  async fetch(ticker: string, range: FetchRange): Promise<SourceResult> {
    const t = sourceTicker(ticker);
    const { days, end } = resolveRange(range);
    const win = calendarWindow(barsNeeded(days), end);
    const chart = await this.chartWithRetry(t, win.start, win.endExclusive);
    if (chart.meta.dataGranularity !== undefined && chart.meta.dataGranularity !== '1d') {
      throw new SourceError(
        'BAD_DATA',
        t,
        `Expected daily bars (1d) for ${t} but received granularity ${JSON.stringify(chart.meta.dataGranularity)}`,
      );
    }
    const rows = chartQuotesToRows(chart.quotes, chart.meta.gmtoffset ?? 0);
    const { bars: all, quality } = cleanBars(rows);
    const bars = trimToRange(all, days, end);
    if (bars.length < this.minBars) {
      throw new SourceError(
        rows.length > 0 && quality.nulls > bars.length ? 'BAD_DATA' : 'NO_DATA',
        t,
        `Expected at least ${this.minBars} clean daily bars for ${t} (${win.start}..${end}) but received ${bars.length} of ${rows.length} (nulls ${quality.nulls}, duplicates ${quality.duplicates})`,
      );
    }
    const known = knownClass(t);
    return { ticker: t, bars, quality, ...(known ? { class: known.class, subtype: known.subtype } : {}) };
  }

  private async chartWithRetry(t: string, period1: string, period2: string): Promise<ChartArray> {
    for (let attempt = 0; ; attempt++) {
      try {
        return (await this.yf.chart(t, { period1, period2, interval: '1d' })) as unknown as ChartArray;
      } catch (err) {
        const e = classify(t, err);
        if (e.retry && attempt < this.retries) {
          await new Promise((res) => setTimeout(res, this.backoffMs * 2 ** attempt));
          continue;
        }
        throw e.error;
      }
    }
  }
}

/** Turns a yahoo-finance2 or network error into a SourceError, and says whether trying again may help. */
function classify(t: string, err: unknown): { error: SourceError; retry: boolean } {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = status(err);
  const msg = e.message.replace(/\s+/g, ' ').slice(0, 300);
  if (e.name === 'HTTPError' && code !== undefined && (code === 429 || code >= 500)) {
    return {
      error: new SourceError('FETCH_FAILED', t, `Expected chart data for ${t} but received HTTP ${code}: ${msg}`, {
        cause: err,
      }),
      retry: true,
    };
  }
  if (e.name === 'NotFoundError' || code === 404 || /not found|delisted|no data found/i.test(msg)) {
    return {
      error: new SourceError('UNKNOWN_TICKER', t, `Expected a symbol Yahoo knows for ${t} but received: ${msg}`, {
        cause: err,
      }),
      retry: false,
    };
  }
  if (e.name === 'FailedYahooValidationError' || /timestamp|unexpected|parsable|quote/i.test(msg)) {
    return {
      error: new SourceError('BAD_DATA', t, `Expected a well-formed chart answer for ${t} but received: ${msg}`, {
        cause: err,
      }),
      retry: false,
    };
  }
  const network = e.name === 'TypeError' || /fetch failed|ECONN|ETIMEDOUT|socket/i.test(msg);
  return {
    error: new SourceError('FETCH_FAILED', t, `Expected chart data for ${t} but received ${e.name}: ${msg}`, {
      cause: err,
    }),
    retry: network,
  };
}
