import type { DataSource } from './create.js';
import type { Bar, FetchRange } from '../types.js';
import { CONTEXT_SET, buildContext, type MarketContext } from '../features/context.js';

export interface FetchedContext {
  context: MarketContext;
  /** Where each present member came from (source name or folder, and the stand-in used if any), by ticker. */
  from: Record<string, string>;
  /** Members no source could give, with the last reason. */
  missing: { ticker: string; reason: string }[];
}

/**
 * Fetches the context set for one range. Each member is looked for in every source in turn (for evaluation: the data
 * folder, then `--context-dir`), then its stand-ins the same way. A member that none has is missing, never an
 * error: features degrade as documented in features.md.
 */
export async function fetchContext(
  sources: readonly { label: string; source: DataSource }[],
  range: FetchRange,
): Promise<FetchedContext> {
  const got = new Map<string, Bar[] | Error>();
  const from: Record<string, string> = {};
  await Promise.all(
    CONTEXT_SET.map(async ({ ticker, alternates }) => {
      for (const candidate of [ticker, ...alternates]) {
        for (const { label, source } of sources) {
          try {
            const res = await source.fetch(candidate, range);
            got.set(ticker, res.bars);
            from[ticker] = candidate === ticker ? label : `${label} (${candidate})`;
            return;
          } catch (e) {
            // Only the primary's failure is worth reporting: stand-ins are usually simply absent.
            if (candidate === ticker) got.set(ticker, e instanceof Error ? e : new Error(String(e)));
          }
        }
      }
    }),
  );
  const { context, missing } = buildContext(got);
  return { context, from, missing };
}
