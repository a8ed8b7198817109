/** Stable codes for report failures; callers branch on `code`, never on message text. */
export type ReportErrorCode = 'BAD_REPORT_INPUT' | 'RENDER_FAILED';

export class ReportError extends Error {
  readonly code: ReportErrorCode;

  constructor(code: ReportErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = this.constructor.name;
    this.code = code;
  }
}

