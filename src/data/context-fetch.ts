import type { DataSource } from './sources.js';
import type { Bar, FetchRange } from './types.js';
import { CONTEXT_TICKERS, buildContext, type MarketContext } from './context.js';

export interface FetchedContext {
  context: MarketContext;
  /** Where each present member came from (source name or folder), by ticker. */
  from: Record<string, string>;
  /** Members no source could give, with the last reason. */
  missing: { ticker: string; reason: string }[];
}

/**
 * Fetches the context set for one range from the first source that has each member (for evaluation: the data
 * folder, then `--context-dir`). A member that no source has is missing, never an error: features degrade as
 * documented in features.md.
 */
export async function fetchContext(
  sources: readonly { label: string; source: DataSource }[],
  range: FetchRange,
): Promise<FetchedContext> {
  const got = new Map<string, Bar[] | Error>();
  const from: Record<string, string> = {};
  await Promise.all(
    CONTEXT_TICKERS.map(async (ticker) => {
      for (const { label, source } of sources) {
        try {
          const res = await source.fetch(ticker, range);
          got.set(ticker, res.bars);
          from[ticker] = label;
          return;
        } catch (e) {
          got.set(ticker, e instanceof Error ? e : new Error(String(e)));
        }
      }
    }),
  );
  const { context, missing } = buildContext(got);
  return { context, from, missing };
}
