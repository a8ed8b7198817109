import type { DataSource } from './create.js';
import type { Bar, FetchRange } from '../types.js';
import { CONTEXT_SET, buildContext, invertBars, scaleHistory, type MarketContext } from '../features/context.js';

export interface FetchedContext {
  context: MarketContext;
  /** Where each present member came from (source name or folder, and the stand-in used if any), by ticker. */
  from: Record<string, string>;
  /** Members no source could give, with the last reason. */
  missing: { ticker: string; reason: string }[];
}

/** Share of the best candidate's bars in the span that an earlier candidate needs to keep its place. */
const SPAN_SHARE = 0.9;

/** Bars of `bars` whose date lies in `[from, to]` (ISO dates compare as strings). */
function barsWithin(bars: readonly Bar[], span: { from: string; to: string }): number {
  let n = 0;
  for (const b of bars) if (b.date >= span.from && b.date <= span.to) n += 1;
  return n;
}

/**
 * Fetches the context set for one range. Each member is looked for in every source in turn (for evaluation: the data
 * folder, then `--context-dir`), then its stand-ins the same way. A member that none has is missing, never an
 * error: features degrade as documented in features.md.
 *
 * With `span` (the dates of the series to be routed, e.g. an evaluation folder's first to last bar), every candidate
 * of a member is read and the first, in the order above, with at least 90 % as many bars inside the span as the best
 * one serves. A folder of 1999–2016 data that holds IVV but not SPY is then compared with its own IVV, not with a
 * `--context-dir` SPY of 2020–2025 that shares none of its days (which would leave every context feature at "no
 * context").
 */
export async function fetchContext(
  sources: readonly { label: string; source: DataSource }[],
  range: FetchRange,
  span?: { from: string; to: string },
): Promise<FetchedContext> {
  const got = new Map<string, Bar[] | Error>();
  const from: Record<string, string> = {};
  await Promise.all(
    CONTEXT_SET.map(async (member) => {
      const { ticker } = member;
      const scaled: readonly { ticker: string; scale: number }[] = 'scaledAlternates' in member ? member.scaledAlternates : [];
      const inverse: readonly string[] = 'inverseAlternates' in member ? member.inverseAlternates : [];
      // Each candidate with how its bars become the member's and how `from` names it.
      const candidates: { symbol: string; as: (bars: Bar[]) => Bar[]; shown: string }[] = [
        ...[ticker, ...member.alternates].map((symbol) => ({ symbol, as: (b: Bar[]) => b, shown: symbol })),
        ...scaled.map(({ ticker: symbol, scale }) => ({ symbol, as: (b: Bar[]) => scaleHistory(b, scale), shown: `${scale}×${symbol}` })),
        ...inverse.map((symbol) => ({ symbol, as: invertBars, shown: `1/${symbol}` })),
      ];
      const found: { bars: Bar[]; label: string; within: number }[] = [];
      for (const { symbol, as, shown } of candidates) {
        const primary = symbol === ticker;
        for (const { label, source } of sources) {
          try {
            const res = await source.fetch(symbol, range);
            const bars = as(res.bars);
            const name = primary ? label : `${label} (${shown})`;
            if (span === undefined) {
              got.set(ticker, bars);
              from[ticker] = name;
              return;
            }
            found.push({ bars, label: name, within: barsWithin(bars, span) });
          } catch (e) {
            // Only the primary's failure is worth reporting: stand-ins are usually simply absent.
            if (primary) got.set(ticker, e instanceof Error ? e : new Error(String(e)));
          }
        }
      }
      // The first candidate in the order above that covers nearly as much of the span as the best one: a stand-in
      // replaces the primary only where it covers clearly more (not where the primary skips a few days).
      const most = Math.max(0, ...found.map((f) => f.within));
      const pick = found.find((f) => f.within >= SPAN_SHARE * most);
      if (pick !== undefined) {
        got.set(ticker, pick.bars);
        from[ticker] = pick.label;
      }
    }),
  );
  const { context, missing } = buildContext(got);
  return { context, from, missing };
}
