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

/** A price as vendors write it: `12.5`, `$12.50`, `1,234.50` (thousands grouped with commas, as US sites export). */
const num = (s: string | undefined): number | null => {
  if (s === undefined || s === '' || /^(null|nan|na|n\/a|-)$/i.test(s)) return null;
  const v = Number(s);
  if (Number.isFinite(v)) return v;
  const m = /^([+-]?)[$€£]?\s*(\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d*\.?\d+)$/.exec(s);
  return m ? Number(`${m[1]}${m[2]!.replace(/,/g, '')}`) : Number.NaN;
};

/** A volume, also with the K / M / B suffix some sites write (`125.91M`). */
const volumeNum = (s: string | undefined): number | null => {
  const plain = num(s);
  if (plain === null || !Number.isNaN(plain)) return plain;
  const m = /^(.*\d)\s*([KMB])$/i.exec(s!);
  if (m === null) return plain;
  const v = num(m[1]);
  return v === null || Number.isNaN(v) ? Number.NaN : v * { K: 1e3, M: 1e6, B: 1e9 }[m[2]!.toUpperCase() as 'K' | 'M' | 'B'];
};

/** Header name in one spelling: lower case, spaces, dots and hyphens as `_` (`Adj. Close`, `adj-close` → `adj_close`). */
const headerName = (h: string): string =>
  h
    .trim()
    .toLowerCase()
    .replace(/[\s.-]+/g, '_')
    .replace(/^_+|_+$/g, '');

/** Other vendors' names of a column, tried in order (the plain name first). */
const HEADER_ALIASES = {
  date: ['date', 'timestamp', 'datetime', 'time', 'day', 'trade_date'],
  open: ['open'],
  high: ['high'],
  low: ['low'],
  // Nasdaq's download calls the close `Close/Last`, Investing.com's `Price`.
  close: ['close', 'close/last', 'last', 'price'],
  adj_close: ['adj_close', 'adjclose', 'adjusted_close', 'adj_close_price'],
  volume: ['volume', 'vol'],
} as const;

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'] as const;

/** Month 1–12 of an English month name or its abbreviation of three letters or more (`Sep`, `Sept`, `September`), else 0. */
const monthOf = (name: string): number => {
  const n = name.toLowerCase();
  return n.length < 3 ? 0 : MONTHS.findIndex((full) => full.startsWith(n)) + 1;
};

/** A two-digit year as POSIX strptime reads `%y`: 69–99 are 1969–1999, 00–68 are 2000–2068. */
const fullYear = (y: string): number => (y.length === 4 ? Number(y) : Number(y) + (Number(y) >= 69 ? 1900 : 2000));

const isoOf = (y: number, m: number, d: number): string => `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;

/** Day and month order of a file's numeric `a/b/yyyy` dates (dateOrder). */
export type DateOrder = 'day-first' | 'month-first' | 'ambiguous' | 'none';

const NUMERIC_DMY = /^(\d{1,2})([/.-])(\d{1,2})\2(\d{4}|\d{2})$/;

/**
 * The day and month order of a file's numeric `a/b/yyyy` (or `a-b-yyyy`, `a.b.yy`) dates: a first field above 12
 * anywhere makes the file day-first, a second field above 12 month-first. `ambiguous` when no field tells (or both
 * do), `none` when the file has no such dates. Never guessed: 01/02/2024 is 2 January in one country and 1 February in
 * another, and a year of daily bars always has a day above 12.
 */
export function dateOrder(cells: readonly string[]): DateOrder {
  let any = false;
  let dayFirst = false;
  let monthFirst = false;
  for (const c of cells) {
    const m = NUMERIC_DMY.exec(c);
    if (m === null) continue;
    any = true;
    if (Number(m[1]) > 12) dayFirst = true;
    if (Number(m[3]) > 12) monthFirst = true;
  }
  if (!any) return 'none';
  return dayFirst === monthFirst ? 'ambiguous' : dayFirst ? 'day-first' : 'month-first';
}

/**
 * The ISO date of a date cell as vendors write it, or the cell unchanged when it cannot be read (the cleaner then
 * drops its row as malformed): `2024-01-02`, `2024-01-02 00:00:00`, `2024-01-02T00:00:00Z` (bars are daily: the time
 * is dropped), `2024/01/02`, `20240102`, `Jan 2, 2024`, `2-Jan-2024`, `02 January 24`, and numeric `a/b/yyyy` in the
 * file's `order` (dateOrder). The calendar check (2024-02-30) is the cleaner's.
 */
export function dateCell(s: string, order: DateOrder = 'none'): string {
  if (/^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]*(?:Z|[+-]\d{2}:?\d{2})?)?$/.test(s)) return s.slice(0, 10);
  const ymd = /^(\d{4})[/.](\d{1,2})[/.](\d{1,2})$/.exec(s) ?? /^(\d{4})(\d{2})(\d{2})$/.exec(s);
  if (ymd !== null) return isoOf(Number(ymd[1]), Number(ymd[2]), Number(ymd[3]));
  const dmy = NUMERIC_DMY.exec(s);
  if (dmy !== null) {
    if (order !== 'day-first' && order !== 'month-first') return s;
    const [a, b, y] = [Number(dmy[1]), Number(dmy[3]), fullYear(dmy[4]!)];
    return order === 'day-first' ? isoOf(y, b, a) : isoOf(y, a, b);
  }
  // Month names: `Jan 2, 2024`, `January 02 2024`, then `2-Jan-2024`, `02 Jan 24`.
  const mdy = /^([A-Za-z]{3,9})\.? (\d{1,2}),? (\d{4})$/.exec(s);
  const dmy2 = mdy === null ? /^(\d{1,2})[ -]([A-Za-z]{3,9})\.?[ -](\d{4}|\d{2})$/.exec(s) : null;
  const parts = mdy !== null ? { mon: mdy[1]!, d: mdy[2]!, y: mdy[3]! } : dmy2 !== null ? { mon: dmy2[2]!, d: dmy2[1]!, y: dmy2[3]! } : null;
  const month = parts === null ? 0 : monthOf(parts.mon);
  return parts === null || month === 0 ? s : isoOf(fullYear(parts.y), month, Number(parts.d));
}

/**
 * Parses `date,open,high,low,close,adj_close,volume` text: any column order and header case, other vendors' names of
 * the columns (HEADER_ALIASES: `timestamp`, `Close/Last`, `Price`, `Adj Close`, `Vol.`), adj_close and volume optional,
 * prices with `$` and thousands commas, volumes with K / M / B, and the date spellings of `dateCell` (numeric day and
 * month in the order the file shows; `dateOrder` `ambiguous` leaves them unread and says so).
 */
export function parseBarsCsv(text: string, name: string): { rows: RawBar[]; malformed: number; dateOrder: DateOrder } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const header = splitCsvLine(lines[0] ?? '').map(headerName);
  const col = (n: keyof typeof HEADER_ALIASES): number => HEADER_ALIASES[n].map((a) => header.indexOf(a)).find((i) => i >= 0) ?? -1;
  const missing = REQUIRED.filter((c) => col(c) < 0);
  if (missing.length > 0) {
    throw new TypeError(
      `Expected header with date,open,high,low,close[,adj_close,volume] for ${name} but received ${describeValue(lines[0] ?? '')} (no ${missing.join(', ')})`,
    );
  }
  const [iDate, iOpen, iHigh, iLow, iClose] = REQUIRED.map(col) as [number, number, number, number, number];
  const iAdj = col('adj_close');
  const iVol = col('volume');
  const body = lines.slice(1).map(splitCsvLine);
  const order = dateOrder(body.map((cells) => (cells[iDate] ?? '').trim()));
  const rows: RawBar[] = [];
  let malformed = 0;
  for (const cells of body) {
    if (cells.length !== header.length) {
      malformed++;
      continue;
    }
    const close = num(cells[iClose]);
    rows.push({
      date: dateCell(cells[iDate]!.trim(), order),
      open: num(cells[iOpen]),
      high: num(cells[iHigh]),
      low: num(cells[iLow]),
      close,
      adjClose: iAdj >= 0 ? num(cells[iAdj]) : close,
      volume: iVol >= 0 ? volumeNum(cells[iVol]) : null,
    });
  }
  return { rows, malformed, dateOrder: order };
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
    let parsed: ReturnType<typeof parseBarsCsv>;
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
      const ambiguous = parsed.dateOrder === 'ambiguous' ? '; dates such as 01/02/2024 left unread: the file does not show whether the day or the month comes first' : '';
      const summary = `${bars.length} usable of ${parsed.rows.length + parsed.malformed} rows (malformed ${quality.malformed ?? 0}, nulls ${quality.nulls}, duplicates ${quality.duplicates}${range.end ? `, on or before ${end}` : ''}${ambiguous})`;
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
