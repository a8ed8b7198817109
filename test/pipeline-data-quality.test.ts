import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { businessDaysBetween, isoToDays } from '../src/data/dates.js';
import { simulateBars } from '../src/data/sim/simulator.js';
import type { Bar } from '../src/data/types.js';
import { UNCERTAIN_CONFIDENCE } from '../src/limits.js';
import { REPORT_FILES, type RunSummary } from '../src/report/types.js';
import type { RunMeta } from '../jobs/run-meta.js';
import { startTestPipeline, type TestPipeline } from './helpers/pipeline.js';

/**
 * Data quality per ticker through a whole csv run: what cleaning dropped (by reason), the gaps, and the `short` flag
 * of a ticker routed on fewer days than requested reach summary.json and summary.md.
 */

const DAYS = 60;
const row = (b: Bar): string => [b.date, b.open, b.high, b.low, b.close, b.adjClose, b.volume ?? ''].join(',');
const HEADER = 'date,open,high,low,close,adj_close,volume';

/** Business days missing between consecutive dates (holidays count too), as the summaries count gaps. */
function gapsOf(dates: readonly string[]): number {
  let g = 0;
  for (let i = 1; i < dates.length; i++) g += businessDaysBetween(isoToDays(dates[i - 1]!), isoToDays(dates[i]!));
  return g;
}

describe('data quality per ticker in the summaries (csv source)', () => {
  let p: TestPipeline;
  let meta: RunMeta;
  let s: RunSummary;
  let md: string;
  // FULL: a whole history plus junk rows; SHORT: 100 bars with a week cut out, so fewer routed days than requested.
  const full = simulateBars('QFULL', { class: 'Equities', subtype: 'stock' }, 400, 21, '2024-06-28');
  const shortAll = simulateBars('QSHORT', { class: 'Commodities', subtype: 'precious-metals' }, 100, 22, '2024-06-28');
  const shortBars = [...shortAll.slice(0, 80), ...shortAll.slice(85)];

  beforeAll(async () => {
    p = await startTestPipeline('quality');
    const dir = path.join(p.tmp, 'csv');
    await mkdir(dir);
    const mid = full[300]!;
    const junk = [
      `${mid.date},abc,${mid.high},${mid.low},${mid.close},${mid.adjClose},1000`, // non-numeric
      `${mid.date},${mid.open},${mid.high},${mid.low},NaN,${mid.adjClose},1000`, // NaN
      `${mid.date},${mid.open},${mid.high},${mid.low},Infinity,${mid.adjClose},1000`, // Inf
      `${mid.date},${mid.open},${mid.high},${mid.low},-5,-5,1000`, // negative
      row(mid), // duplicate date
      `${mid.date},1,2`, // wrong column count
    ];
    const fullRows = full.map(row);
    fullRows.splice(301, 0, ...junk);
    await writeFile(path.join(dir, 'QFULL.csv'), `${HEADER}\n${fullRows.join('\n')}\n`);
    await writeFile(path.join(dir, 'QSHORT.csv'), `${HEADER}\n${shortBars.map(row).join('\n')}\n`);
    ({ meta } = await p.run({ tickers: ['QFULL', 'QSHORT'], source: 'csv', dataDir: dir, range: { days: DAYS } }));
    s = await p.summary(meta);
    md = await readFile(path.join(meta.reportDir!, REPORT_FILES.summaryMd), 'utf8');
  }, 60_000);

  afterAll(async () => {
    await p?.close();
  });

  it('carries rows read, rows dropped by reason and gaps for every ticker', () => {
    expect(meta.status).toBe('finished');
    expect(s.tickers.map((t) => t.ticker)).toEqual(['QFULL', 'QSHORT']);
    const [f, sh] = s.tickers as [RunSummary['tickers'][number], RunSummary['tickers'][number]];
    expect(f.days).toBe(DAYS);
    expect(f.requestedDays).toBe(DAYS);
    expect(f.short).toBeUndefined();
    expect(f.quality).toEqual({
      rows: 406,
      dropped: { malformed: 1, badPrice: 4, duplicates: 1 },
      gaps: gapsOf(full.map((b) => b.date)),
      routedGaps: gapsOf(full.slice(-DAYS).map((b) => b.date)),
    });

    // 95 bars, the first token at bar MIN_HISTORY_BARS − 1 = 59: 36 routed days of the 60 requested.
    expect(sh.days).toBe(36);
    expect(sh.requestedDays).toBe(DAYS);
    expect(sh.short).toBe(true);
    const routedDates = shortBars.slice(-36).map((b) => b.date);
    expect(sh.quality).toEqual({
      rows: 95,
      dropped: { malformed: 0, badPrice: 0, duplicates: 0 },
      gaps: gapsOf(shortBars.map((b) => b.date)),
      routedGaps: gapsOf(routedDates),
    });
    expect(sh.quality!.routedGaps).toBeGreaterThanOrEqual(5); // the week cut out lies in the routed days
    for (const t of s.tickers) expect(t.uncertain === true).toBe(t.confidence < UNCERTAIN_CONFIDENCE);
  });

  it('lists the short ticker in its own section of summary.md, with days, rows dropped and gaps', () => {
    const section = md.slice(md.indexOf('## Short tickers'), md.indexOf('## Failed tickers'));
    expect(section).toContain('1 ticker routed on fewer days than requested:');
    const sh = s.tickers[1]!;
    expect(section).toContain(`| QSHORT | 36 / ${DAYS} | 95 | none | ${sh.quality!.gaps} / ${sh.quality!.routedGaps} |`);
    expect(section).not.toContain('QFULL');
    expect(md).toContain('## Uncertain routes');
    expect(md).toContain(`A ticker is uncertain when its confidence is below ${UNCERTAIN_CONFIDENCE}.`);
  });
});
