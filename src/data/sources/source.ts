import type { SourceName } from '../../limits.js';
import type { FetchRange, SourceResult } from '../types.js';

/** Where bars come from. `fetch` resolves to cleaned bars (warm-up included) or rejects with a SourceError. */
export interface DataSource {
  readonly name: SourceName;
  fetch(ticker: string, range: FetchRange): Promise<SourceResult>;
}
