import type { FetchRange, SourceResult } from '../types.js';
import { SourceError } from '../errors.js';
import { knownClass, parseSimTicker } from '../universe.js';
import { simulateBars, simulateContextBars, DEFAULT_SIM_END } from '../sim/simulator.js';
import { CONTEXT_TICKERS } from '../features/context.js';
import { barsNeeded, resolveRange } from './range.js';
import { sourceTicker } from '../validate.js';
import type { DataSource } from './source.js';

/**
 * The seeded simulator as a source: tickers of the built-in universe and synthetic `SIM-…` tickers. Without an end
 * date it ends on DEFAULT_SIM_END so an offline demo is the same on every day.
 */
export class SimSource implements DataSource {
  readonly name = 'sim' as const;

  constructor(private readonly seed: number) {}

  async fetch(ticker: string, range: FetchRange): Promise<SourceResult> {
    const t = sourceTicker(ticker);
    const spec = knownClass(t) ?? parseSimTicker(t);
    if (!spec) {
      throw new SourceError(
        'UNKNOWN_TICKER',
        t,
        `Expected a ticker of the built-in universe or SIM-<EQ|FI|CO|DE>-<code>-<n> for ${t} but received an unknown ticker`,
      );
    }
    const { days, end } = resolveRange(range, DEFAULT_SIM_END);
    // The context tickers are the simulator's reference markets (fixed loadings on the market factors), so the
    // context a run fetches through this source is what training saw; they remain valid members of their sub-type.
    const bars = CONTEXT_TICKERS.includes(t)
      ? simulateContextBars(this.seed, barsNeeded(days), end).get(t)!
      : simulateBars(t, spec, barsNeeded(days), this.seed, end);
    return {
      ticker: t,
      bars,
      quality: { nulls: 0, duplicates: 0, gaps: 0, reordered: 0 },
      class: spec.class,
      subtype: spec.subtype,
    };
  }
}
