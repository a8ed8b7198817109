import YahooFinance from 'yahoo-finance2';
import type { FetchRange, SourceResult } from '../types.js';
import { SourceError } from '../errors.js';
import { cleanBars, type RawBar } from '../clean.js';
import { barsNeeded, calendarWindow, resolveRange, trimToRange } from './range.js';
import { minHistoryBars } from '../../config.js';
import { knownClass } from '../universe.js';
import { sourceTicker } from '../validate.js';
import type { DataSource } from './source.js';

/** Something that paces requests; `acquire` resolves when one more request may go out. */
export interface RequestLimiter {
  acquire(): Promise<unknown>;
}

export interface YahooSourceOptions {
  /** HTTP client handed to yahoo-finance2. @defaultValue globalThis.fetch */
  fetch?: typeof fetch;
  /** Fewest clean bars accepted. @defaultValue MIN_HISTORY_BARS of the configuration (60) */
  minBars?: number;
  /** Attempts after the first on HTTP 429/5xx, time-outs and network errors. @defaultValue 3 */
  retries?: number;
  /** Back-off base: retry k waits a random time in [d/2, d] with d = backoffMs·2^k (capped). @defaultValue 500 */
  backoffMs?: number;
  /** Largest back-off before jitter. @defaultValue 8000 */
  maxBackoffMs?: number;
  /** Time-out of one HTTP request, body included. @defaultValue 10000 */
  timeoutMs?: number;
  /** Shared pacing of requests (every attempt, retries included). @defaultValue none */
  limiter?: RequestLimiter;
  /** Jitter source in [0, 1). @defaultValue Math.random */
  random?: () => number;
  /** How back-off waits; tests record the delays instead of waiting. @defaultValue setTimeout */
  sleep?: (ms: number) => Promise<void>;
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

/** A request that did not answer in time; the timer aborts the request (and its body) with this reason. */
export class RequestTimeoutError extends Error {
  readonly code = 'REQUEST_TIMEOUT';
  constructor(readonly timeoutMs: number) {
    super(`request timed out after ${timeoutMs} ms`);
    this.name = this.constructor.name;
  }
}

/**
 * Wraps a fetch so that each request, body included, ends within `ms`. The abort reaches a fetch that honours
 * signals; the race also ends a fetch that ignores them (a hung socket must not hold a job for the lock's life).
 */
export function fetchWithTimeout(inner: typeof fetch, ms: number): typeof fetch {
  return (async (input: Parameters<typeof fetch>[0], init?: RequestInit) => {
    const ctrl = new AbortController();
    const timeout = new RequestTimeoutError(ms);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        ctrl.abort(timeout);
        reject(timeout);
      }, ms);
    });
    const signal = init?.signal ? AbortSignal.any([init.signal, ctrl.signal]) : ctrl.signal;
    try {
      const res = await Promise.race([inner(input, { ...init, signal }), expired]);
      // yahoo-finance2 reads the body after this returns; read it here so the time-out covers a stalled body too.
      const body = await Promise.race([res.arrayBuffer(), expired]);
      return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
    } catch (err) {
      throw ctrl.signal.aborted && ctrl.signal.reason === timeout ? timeout : err;
    } finally {
      clearTimeout(timer);
    }
  }) as typeof fetch;
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
  private readonly maxBackoffMs: number;
  private readonly timeoutMs: number;
  private readonly limiter: RequestLimiter | undefined;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(opts: YahooSourceOptions = {}) {
    this.minBars = opts.minBars ?? minHistoryBars();
    this.retries = checkInt(opts.retries ?? 3, 'retries', 0);
    this.backoffMs = checkInt(opts.backoffMs ?? 500, 'backoffMs', 0);
    this.maxBackoffMs = checkInt(opts.maxBackoffMs ?? 8_000, 'maxBackoffMs', 0);
    this.timeoutMs = checkInt(opts.timeoutMs ?? 10_000, 'timeoutMs', 1);
    this.limiter = opts.limiter;
    this.random = opts.random ?? Math.random;
    this.sleep = opts.sleep ?? ((ms) => new Promise((res) => setTimeout(res, ms)));
    this.yf = new YahooFinance({
      fetch: fetchWithTimeout(opts.fetch ?? globalThis.fetch, this.timeoutMs),
      logger: silent,
      versionCheck: false,
      suppressNotices: ['yahooSurvey'],
      validation: { logErrors: false, logOptionsErrors: false },
    });
  }

  /** Wait before retry `attempt` (0-based): exponential, capped, with jitter so that workers throttled together do not retry together. */
  backoffDelay(attempt: number): number {
    const d = Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt);
    return Math.round(d / 2 + (d / 2) * this.random());
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
        await this.limiter?.acquire();
        return (await this.yf.chart(t, { period1, period2, interval: '1d' })) as unknown as ChartArray;
      } catch (err) {
        const e = classify(t, err);
        if (e.retry && attempt < this.retries) {
          await this.sleep(this.backoffDelay(attempt));
          continue;
        }
        throw e.error;
      }
    }
  }
}

function checkInt(v: number, name: string, min: number): number {
  if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`Expected integer >= ${min} for ${name} but received ${String(v)}`);
  return v;
}

/** Turns a yahoo-finance2 or network error into a SourceError, and says whether trying again may help. */
function classify(t: string, err: unknown): { error: SourceError; retry: boolean } {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = status(err);
  const msg = e.message.replace(/\s+/g, ' ').slice(0, 300);
  const timeout = err instanceof RequestTimeoutError ? err : e.cause instanceof RequestTimeoutError ? e.cause : undefined;
  if (timeout !== undefined) {
    return {
      error: new SourceError('FETCH_FAILED', t, `Expected chart data for ${t} within ${timeout.timeoutMs} ms but the request timed out`, { cause: err }),
      retry: true,
    };
  }
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
  // undici reports a dropped connection as `TypeError: fetch failed` (the cause names ECONNRESET and the like).
  const network = /fetch failed|ECONN|ETIMEDOUT|EAI_AGAIN|socket|network/i.test(`${msg} ${String((e.cause as { code?: unknown } | undefined)?.code ?? '')}`);
  // Any other TypeError comes from reading an answer of the wrong shape (`result: null`, a missing array).
  if (e.name === 'FailedYahooValidationError' || (e.name === 'TypeError' && !network) || /timestamp|unexpected|parsable|quote/i.test(msg)) {
    return {
      error: new SourceError('BAD_DATA', t, `Expected a well-formed chart answer for ${t} but received: ${msg}`, {
        cause: err,
      }),
      retry: false,
    };
  }
  return {
    error: new SourceError('FETCH_FAILED', t, `Expected chart data for ${t} but received ${e.name}: ${msg}`, {
      cause: err,
    }),
    retry: network,
  };
}
