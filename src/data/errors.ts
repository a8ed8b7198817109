/** Why a source could not deliver bars for a ticker. Stable codes; the message says what was expected. */
export type SourceErrorCode = 'UNKNOWN_TICKER' | 'NO_DATA' | 'BAD_DATA' | 'FETCH_FAILED';

export class SourceError extends Error {
  readonly code: SourceErrorCode;
  readonly ticker: string;

  constructor(code: SourceErrorCode, ticker: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = this.constructor.name;
    this.code = code;
    this.ticker = ticker;
  }
}
