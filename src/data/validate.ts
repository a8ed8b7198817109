import { TICKER_PATTERN } from '../limits.js';
import { SourceError } from './errors.js';

/**
 * Upper-cases and checks a ticker before it touches a file name, a Redis key or a URL: 1–15 characters, letters,
 * digits and `. - = ^` after a leading letter or digit (Yahoo spells futures `GC=F`, currencies `EURUSD=X`, foreign
 * listings `AZT.OL`; index symbols such as `^VIX` start with `^` and are not accepted).
 */
export function validateTicker(t: string): string {
  if (typeof t !== 'string') {
    throw new TypeError(`Expected ticker string for ticker but received ${t === null ? 'null' : typeof t}`);
  }
  const up = t.toUpperCase();
  if (!TICKER_PATTERN.test(up)) {
    const shown = t.length > 40 ? `${JSON.stringify(t.slice(0, 40))}… (${t.length} chars)` : JSON.stringify(t);
    throw new TypeError(
      `Expected ticker of 1-15 characters A-Z 0-9 . - = ^ (starting with a letter or digit) for ticker but received ${shown}`,
    );
  }
  return up;
}

/** validateTicker for sources: a bad ticker becomes a SourceError (UNKNOWN_TICKER) so fetch callers see one type. */
export function sourceTicker(ticker: string): string {
  try {
    return validateTicker(ticker);
  } catch (err) {
    throw new SourceError('UNKNOWN_TICKER', String(ticker), (err as Error).message, { cause: err });
  }
}
