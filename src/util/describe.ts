/**
 * The one way a received value is shown in `Expected <what> for <name> but received <value>` messages, everywhere:
 * argument checks of the router, job payload validators, report input checks, the model loader. Strings are quoted
 * and cut to a short excerpt, so a message that quotes input stays short however large the input was.
 */

/** Longest excerpt of a received string that a message quotes. */
export const EXCERPT_CHARS = 40;

/** `text` cut to at most `max` characters, marked with `…` and the full length when cut. */
export function excerpt(text: string, max = EXCERPT_CHARS): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} chars)` : text;
}

/** `"abc"`, `24 of type number`, `Float32Array of length 63`, `array of length 2`, `null`, `object`. */
export function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'string') {
    const cut = v.length > EXCERPT_CHARS;
    return `${JSON.stringify(cut ? v.slice(0, EXCERPT_CHARS) : v)}${cut ? `… (${v.length} chars)` : ''}`;
  }
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${String(v)} of type ${typeof v}`;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
    return `${v.constructor.name} of length ${(v as unknown as ArrayLike<number>).length}`;
  }
  if (Array.isArray(v)) return `array of length ${v.length}`;
  return typeof v;
}

/** The message every argument check throws: `Expected <what> for <name> but received <value>`. */
export function expectedMessage(what: string, name: string, received: unknown): string {
  return `Expected ${what} for ${name} but received ${describeValue(received)}`;
}
