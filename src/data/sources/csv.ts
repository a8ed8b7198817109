import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { DOMAINS, parseDomainLabel, type Domain } from '../../domains.js';
import type { FetchRange, SourceResult } from '../types.js';
import { SourceError } from '../errors.js';
import { cleanBars, type RawBar } from '../clean.js';
import { barsNeeded, resolveRange, trimToRange } from './range.js';
import { minHistoryBars } from '../../config.js';
import { knownClass } from '../universe.js';
import { sourceTicker } from '../validate.js';
import { describeValue } from '../../util/describe.js';
import type { DataSource } from './source.js';

const REQUIRED = ['date', 'open', 'high', 'low', 'close'] as const;

/** A labels file whose header or a line is not `ticker,class` (strict reading only). */
export class LabelsFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = this.constructor.name;
  }
}

/**
 * Reads a labels file: a header with at least the columns `ticker` and `class` (any order and case, more columns
 * ignored), then one instrument a line, its class in any usual spelling (parseDomainLabel). Strict (`npm run
 * evaluate`): a header without those columns, or a line without a ticker and a known class, throws LabelsFileError
 * naming the line. Lenient (the csv source): no such header gives no labels, and a bad line is skipped.
 */
export function parseLabelsCsv(text: string, source: string, strict: boolean): Map<string, Domain> {
  const labels = new Map<string, Domain>();
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = splitCsvLine(lines[0] ?? '').map((h) => h.trim().toLowerCase());
  const ti = header.indexOf('ticker');
  const ci = header.indexOf('class');
  if (ti < 0 || ci < 0) {
    if (!strict) return labels;
    throw new LabelsFileError(`Expected a header with columns ticker,class for ${source} but received ${describeValue(lines[0] ?? '')}`);
  }
  lines.slice(1).forEach((line, i) => {
    const cells = splitCsvLine(line);
    const ticker = (cells[ti] ?? '').trim().toUpperCase();
    const cls = parseDomainLabel(cells[ci] ?? '');
    if (ticker !== '' && cls !== undefined) labels.set(ticker, cls);
    else if (strict) {
      throw new LabelsFileError(
        `Expected a ticker and one of ${DOMAINS.join(', ')} on line ${i + 2} of ${source} but received ${describeValue(line)}`,
      );
    }
  });
  return labels;
}

/** Splits one CSV line; double-quoted fields may hold commas and `""` escapes. */
export function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim());
}

const num = (s: string | undefined): number | null => {
  if (s === undefined || s === '' || /^(null|nan|na|n\/a)$/i.test(s)) return null;
  const v = Number(s);
  return Number.isFinite(v) ? v : Number.NaN;
};

/** Header name in one spelling: lower case, spaces and hyphens as `_` (`Adj Close`, `adj-close` → `adj_close`). */
const headerName = (h: string): string => h.trim().toLowerCase().replace(/[\s-]+/g, '_');

/**
 * The date part of a date cell: vendors write `2024-01-02`, `2024-01-02 00:00:00` or `2024-01-02T00:00:00Z`; bars
 * are daily, so a time after the date is dropped. Anything else stays as it is (and fails the date check).
 */
const dateCell = (s: string): string => (/^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]*(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(s) ? s.slice(0, 10) : s);

/**
 * Parses `date,open,high,low,close,adj_close,volume` text (any column order and header case; adj_close — also
 * `Adj Close`, `adjclose`, `adjusted_close` — and volume optional).
 */
export function parseBarsCsv(text: string, name: string): { rows: RawBar[]; malformed: number } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = splitCsvLine(lines[0] ?? '').map(headerName);
  const col = (n: string): number => header.indexOf(n);
  const missing = REQUIRED.filter((c) => col(c) < 0);
  if (missing.length > 0) {
    throw new TypeError(
      `Expected header with date,open,high,low,close[,adj_close,volume] for ${name} but received ${describeValue(lines[0] ?? '')}`,
    );
  }
  const iAdj = ['adj_close', 'adjclose', 'adjusted_close'].map(col).find((i) => i >= 0) ?? -1;
  const iVol = col('volume');
  const rows: RawBar[] = [];
  let malformed = 0;
  for (let k = 1; k < lines.length; k++) {
    const cells = splitCsvLine(lines[k]!);
    if (cells.length !== header.length) {
      malformed++;
      continue;
    }
    const close = num(cells[col('close')]);
    rows.push({
      date: dateCell(cells[col('date')]!.trim()),
      open: num(cells[col('open')]),
      high: num(cells[col('high')]),
      low: num(cells[col('low')]),
      close,
      adjClose: iAdj >= 0 ? num(cells[iAdj]) : close,
      volume: iVol >= 0 ? num(cells[iVol]) : null,
    });
  }
  return { rows, malformed };
}

/**
 * A folder of `<TICKER>.csv` files. An optional `labels.csv` (`ticker,class[,subtype|note…]`) gives classes;
 * without one, the built-in universe does.
 */
export class CsvSource implements DataSource {
  readonly name = 'csv' as const;
  private labels: Promise<Map<string, Domain>> | undefined;

  constructor(private readonly dir: string) {}

  private loadLabels(): Promise<Map<string, Domain>> {
    const file = path.join(this.dir, 'labels.csv');
    // Lenient: the labels only name each ticker's class in the report; a bad line must not fail the fetch.
    this.labels ??= readFile(file, 'utf8').then(
      (text) => parseLabelsCsv(text, file, false),
      (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return new Map<string, Domain>();
        throw err;
      },
    );
    return this.labels;
  }

  async fetch(ticker: string, range: FetchRange): Promise<SourceResult> {
    const t = sourceTicker(ticker);
    const { days, end } = resolveRange(range);
    const file = path.join(this.dir, `${t}.csv`);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new SourceError(
        'NO_DATA',
        t,
        `Expected file ${file} for ${t} but received ${code === 'ENOENT' ? 'no such file' : String(code ?? err)}`,
        { cause: err },
      );
    }
    let parsed: { rows: RawBar[]; malformed: number };
    try {
      parsed = parseBarsCsv(text, file);
    } catch (err) {
      throw new SourceError('BAD_DATA', t, (err as Error).message, { cause: err });
    }
    const { bars: all, quality } = cleanBars(parsed.rows, { malformed: parsed.malformed });
    const bars = trimToRange(all, days, range.end ?? '9999-12-31');
    // MIN_HISTORY_BARS: a shorter history routes on what it has (docs/features.md, "Short histories").
    const min = minHistoryBars();
    if (bars.length < min) {
      const dropped = (quality.malformed ?? 0) + quality.nulls;
      const summary = `${bars.length} usable of ${parsed.rows.length + parsed.malformed} rows (malformed ${quality.malformed ?? 0}, nulls ${quality.nulls}, duplicates ${quality.duplicates}${range.end ? `, on or before ${end}` : ''})`;
      throw new SourceError(
        dropped > bars.length ? 'BAD_DATA' : 'NO_DATA',
        t,
        `Expected at least ${min} clean bars (${barsNeeded(days)} wanted) for ${t} in ${file} but received ${summary}`,
      );
    }
    const labels = await this.loadLabels();
    const label = labels.get(t);
    const known = knownClass(t);
    const result: SourceResult = { ticker: t, bars, quality };
    if (label) {
      result.class = label;
      if (known && known.class === label) result.subtype = known.subtype;
    } else if (known) {
      result.class = known.class;
      result.subtype = known.subtype;
    }
    return result;
  }
}
