import { SOURCE_NAMES, type SourceName } from '../../limits.js';
import { SimSource } from './sim.js';
import { CsvSource } from './csv.js';
import { YahooSource, type YahooSourceOptions } from './yahoo.js';
import type { DataSource } from './source.js';

export type { DataSource };

export { SourceError, type SourceErrorCode } from '../errors.js';
export { validateTicker, sourceTicker } from '../validate.js';
export { barsNeeded, calendarWindow, resolveRange, trimToRange } from './range.js';


export interface CreateSourceOptions {
  source: SourceName;
  /** Folder of `<TICKER>.csv` files; required for `csv`. */
  dataDir?: string;
  /** HTTP client for `yahoo` (tests inject a recorded one). @defaultValue globalThis.fetch */
  fetch?: typeof fetch;
  /** Further options of the yahoo source: time-out, retries, a shared rate limiter. */
  yahoo?: Omit<YahooSourceOptions, 'fetch'>;
  /** Simulator seed for `sim`. @defaultValue 7 */
  seed?: number;
}

/** Simulator seed when a request names none. */
export const DEFAULT_SIM_SEED = 7;

export function createSource(opts: CreateSourceOptions): DataSource {
  switch (opts?.source) {
    case 'sim':
      return new SimSource(opts.seed ?? DEFAULT_SIM_SEED);
    case 'csv':
      if (typeof opts.dataDir !== 'string' || opts.dataDir === '') {
        throw new TypeError(`Expected folder path for dataDir of the csv source but received ${String(opts.dataDir)}`);
      }
      return new CsvSource(opts.dataDir);
    case 'yahoo':
      return new YahooSource({ ...opts.yahoo, ...(opts.fetch ? { fetch: opts.fetch } : {}) });
    default:
      throw new TypeError(
        `Expected one of ${SOURCE_NAMES.join(', ')} for source but received ${JSON.stringify(opts?.source)}`,
      );
  }
}
