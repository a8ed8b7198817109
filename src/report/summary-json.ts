import { randomUUID } from 'node:crypto';
import type { RunSummary } from './types.js';

/** The text of `summary.json`: the summary as indented JSON and a final newline. */
export function summaryJson(summary: RunSummary): string {
  return `${JSON.stringify(summary, null, 2)}\n`;
}

/** The fields serialised ahead: the per-ticker rows and failures, about 1 KB a ticker, almost all of the file. */
const BULK = ['tickers', 'failed'] as const;

/** `value` as `JSON.stringify(summary, null, 2)` writes it under a top-level key: indented one level deeper. */
function nestedJson(key: string, value: unknown): string {
  const whole = JSON.stringify({ [key]: value }, null, 2);
  return whole.slice(`{\n  ${JSON.stringify(key)}: `.length, -'\n}'.length);
}

/**
 * `summaryJson` in two steps, so a report can serialise the bulk while its figures render and write the file as soon
 * as the timings are known: the per-ticker rows and failures are serialised now, and the returned function writes
 * the rest of the summary it is given (finish time, timings) around them. The text is the same as `summaryJson` of
 * the final summary, provided its `tickers` and `failed` did not change in between.
 */
export function prepareSummaryJson(summary: RunSummary): (final: RunSummary) => string {
  const marks = BULK.map(() => `bulk:${randomUUID()}`);
  const texts = BULK.map((key) => nestedJson(key, summary[key]));
  return (final) => {
    const rest = { ...final } as Record<string, unknown>;
    BULK.forEach((key, i) => (rest[key] = marks[i]));
    const head = summaryJson(rest as unknown as RunSummary);
    // Each mark is a fresh UUID that only its placeholder holds; the pieces are joined by position, not by a pattern,
    // because a replacement pattern would read `$&` and the like in the rows' text.
    const at = marks.map((m, i) => ({ i, pos: head.indexOf(JSON.stringify(m)), len: JSON.stringify(m).length })).sort((a, b) => a.pos - b.pos);
    let out = '';
    let from = 0;
    for (const { i, pos, len } of at) {
      out += head.slice(from, pos) + texts[i]!;
      from = pos + len;
    }
    return out + head.slice(from);
  };
}
