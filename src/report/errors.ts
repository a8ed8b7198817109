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

/** Short description of a received value for `Expected … but received …` messages. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} of length ${(value as unknown as ArrayLike<number>).length}`;
  if (typeof value === 'string') return `"${value.length > 40 ? `${value.slice(0, 40)}…` : value}" of type string`;
  if (typeof value === 'object') return 'object';
  return `${String(value)} of type ${typeof value}`;
}
