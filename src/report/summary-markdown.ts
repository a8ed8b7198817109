import { DOMAINS } from '../domains.js';
import { PSI_BANDS } from './drift.js';
import { CONDITION_THRESHOLDS as T, classStats, classOf } from './market-condition.js';
import { UNCERTAIN_CONFIDENCE } from '../limits.js';
import type { RunSummary, TickerSummary } from './types.js';

const pct = (x: number, digits = 1): string => `${(x * 100).toFixed(digits)} %`;
const signedPct = (x: number): string => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`;

/** Pipes and line breaks would break a Markdown table cell; reasons come from arbitrary error messages. */
function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
}

/** Markdown version of a run's insights: conditions per class, routing, mismatches, failures, timings. */
export function buildSummaryMarkdown(summary: RunSummary): string {
  const lines: string[] = [];
  const n = summary.tickers.length;
  lines.push(`# Routing report: run ${summary.runId}`, '');
  lines.push(
    `Source \`${summary.source}\`, ${n} routed ticker${n === 1 ? '' : 's'} (${summary.tokens} ticker-days), ` +
      `${summary.failed.length} failed. Started ${summary.createdAt}, finished ${summary.finishedAt}.`,
    '',
  );

  const stats = classStats(summary);
  lines.push(...inBrief(summary, stats));

  lines.push('## Market condition and routing by asset class', '');
  if (stats.length === 0) {
    lines.push('No routed tickers in this run.', '');
  } else {
    lines.push('| class | tickers | ann. volatility | ann. return | condition | primary domain | share of days | mean confidence |');
    lines.push('| --- | ---: | ---: | ---: | --- | --- | ---: | ---: |');
    for (const s of stats) {
      lines.push(
        `| ${s.name} | ${s.tickers} | ${pct(s.annVol)} | ${signedPct(s.annReturn)} | ${s.condition} | ` +
          `${s.primaryDomain} | ${pct(s.primaryShare)} | ${s.confidence.toFixed(3)} |`,
      );
    }
    lines.push('');
  }
  lines.push(
    'Conditions use the class means of annualised volatility (mean daily volatility × √252) and annualised log ' +
      `return (total log return × 252 / days): **crisis** when volatility ≥ ${pct(T.crisisVol, 0)} and return ≤ ` +
      `${signedPct(T.crisisReturn)}; else **high volatility** when volatility ≥ ${pct(T.highVol, 0)}; else **bull** ` +
      `when return ≥ ${signedPct(T.bullReturn)}; **bear** when return ≤ ${signedPct(T.bearReturn)}; otherwise ` +
      '**sideways**.',
    '',
  );

  lines.push(...driftSection(summary));

  lines.push('## Tickers routed against their label', '');
  const labelled = summary.tickers.filter((t) => t.class !== undefined);
  const against = labelled.filter((t) => t.domain !== t.class);
  if (labelled.length === 0) {
    lines.push('No ticker in this run has a known asset class.', '');
  } else if (against.length === 0) {
    lines.push(`All ${labelled.length} labelled tickers were routed to their own class.`, '');
  } else {
    lines.push(`${against.length} of ${labelled.length} labelled tickers were routed to another domain:`, '');
    lines.push('| ticker | class | routed to | confidence |', '| --- | --- | --- | ---: |');
    for (const t of against) {
      lines.push(`| ${t.ticker} | ${classOf(t)}${t.subtype ? ` (${t.subtype})` : ''} | ${t.domain} | ${t.confidence.toFixed(3)} |`);
    }
    lines.push('');
  }

  lines.push(...uncertainSection(summary.tickers));
  lines.push(...shortSection(summary.tickers));

  lines.push('## Failed tickers', '');
  if (summary.failed.length === 0) {
    lines.push('None.', '');
  } else {
    lines.push('| ticker | reason |', '| --- | --- |');
    for (const f of summary.failed) lines.push(`| ${cell(f.ticker)} | ${cell(f.reason)} |`);
    lines.push('');
  }

  lines.push(...reasonsSection(summary.tickers));

  const t = summary.timings;
  lines.push('## Backend and timings', '');
  lines.push(
    `- Router backend: \`${summary.backend}\`; model \`${summary.model.path}\` (H = ${summary.model.hidden}, ` +
      `${summary.model.members !== undefined ? `an ensemble of ${summary.model.members} routers, ` : ''}features ${summary.model.featureSpec})`,
    `- Fetch ${ms(t.fetchMs)}, route ${ms(t.routeMs)}, report ${ms(t.reportMs)}, total ${ms(t.totalMs)}`,
  );
  if (summary.context) {
    const { set, missing } = summary.context;
    lines.push(
      missing.length === 0
        ? `- Market context: ${set.join(', ')}, all present`
        : `- Market context: ${set.join(', ')}; missing ${missing.join(', ')}, so the features that compare with them read as "no context" and routing leans on each series alone`,
    );
  }
  lines.push('');
  return lines.join('\n');
}

/**
 * The note's opening: one sentence per asset class (condition with its figures, where the router sent it and how
 * sure it was), then routing against labels, drift and failures, so a reader gets the run without the tables.
 */
function inBrief(summary: RunSummary, stats: ReturnType<typeof classStats>): string[] {
  const lines = ['## In brief', ''];
  if (stats.length === 0) {
    lines.push(`- Nothing was routed: all ${summary.failed.length} requested tickers failed (reasons below).`, '');
    return lines;
  }
  for (const s of stats) {
    const own = s.name === s.primaryDomain ? 'its own domain' : s.name === 'Unknown' ? 'no labelled domain' : `not ${s.name}`;
    lines.push(
      `- **${s.name}** (${s.tickers} ticker${s.tickers === 1 ? '' : 's'}): ${s.condition}, ${pct(s.annVol)} annualised volatility ` +
        `and ${signedPct(s.annReturn)} annualised return; routed to ${s.primaryDomain} on ${pct(s.primaryShare, 0)} of days ` +
        `(${own}), mean confidence ${s.confidence.toFixed(2)}.`,
    );
  }
  const labelled = summary.tickers.filter((t) => t.class !== undefined);
  const against = labelled.filter((t) => t.domain !== t.class).length;
  if (labelled.length > 0) lines.push(`- ${against} of ${labelled.length} labelled tickers went to a domain other than their label.`);
  const d = summary.drift;
  if (d) {
    lines.push(
      `- Against the previous run of this universe the domain mix is **${d.level}** (PSI ${d.psi.toFixed(3)}); ` +
        `${d.changed.length} of ${d.compared} tickers changed domain; mean confidence ${d.meanConfidenceChange >= 0 ? 'rose' : 'fell'} by ${Math.abs(d.meanConfidenceChange).toFixed(3)}.`,
    );
  }
  const f = summary.failed.length;
  lines.push(f === 0 ? '- No ticker failed.' : `- ${f} ticker${f === 1 ? '' : 's'} failed: ${summary.failed.map((x) => x.ticker).slice(0, 10).join(', ')}${f > 10 ? ', …' : ''} (reasons below).`);
  lines.push('');
  return lines;
}

/** Routing mix of this run beside the previous run of its universe, the PSI between them, and who moved. */
function driftSection(summary: RunSummary): string[] {
  const { routing, drift } = summary;
  const lines = ['## Routing mix and drift', ''];
  const prevCol = drift ? ' previous run |' : '';
  lines.push(`| domain | tickers | share |${prevCol}`, `| --- | ---: | ---: |${drift ? ' ---: |' : ''}`);
  for (const d of DOMAINS) {
    const prev = drift ? ` ${pct(drift.previousShare[d])} |` : '';
    lines.push(`| ${d} | ${routing.counts[d]} | ${pct(routing.share[d])} |${prev}`);
  }
  lines.push('');
  const conf = `Mean confidence over routed tickers: ${routing.meanConfidence.toFixed(3)}`;
  if (drift === null) {
    lines.push(`${conf}.`, '');
    lines.push(
      summary.tickers.length === 0
        ? `No drift measured: nothing was routed (universe \`${summary.universe}\`).`
        : `No drift measured: this is the first recorded run of universe \`${summary.universe}\` (same source and ticker set).`,
      '',
    );
    return lines;
  }
  const sign = drift.meanConfidenceChange >= 0 ? '+' : '';
  lines.push(`${conf} (previous run ${drift.previousMeanConfidence.toFixed(3)}, ${sign}${drift.meanConfidenceChange.toFixed(3)}).`, '');
  lines.push(
    `Against run ${drift.previousRunId} (enqueued ${drift.previousCreatedAt}) of the same universe \`${drift.universe}\`: ` +
      `population stability index **${drift.psi.toFixed(3)}, ${drift.level}** (stable below ${PSI_BANDS.moderate}, ` +
      `moderate below ${PSI_BANDS.significant}, significant from ${PSI_BANDS.significant}).`,
    '',
  );
  if (drift.changed.length === 0) {
    lines.push(`None of the ${drift.compared} tickers routed in both runs changed domain.`, '');
  } else {
    lines.push(`${drift.changed.length} of ${drift.compared} tickers routed in both runs changed domain:`, '');
    lines.push('| ticker | previous domain | domain now |', '| --- | --- | --- |');
    for (const c of drift.changed) lines.push(`| ${c.ticker} | ${c.from} | ${c.to} |`);
    lines.push('');
  }
  return lines;
}

/** The two domains of highest mean probability, `Equities 0.45, Derivatives 0.40`. */
export function topTwo(t: TickerSummary): string {
  return DOMAINS.map((d, i) => ({ d, p: t.probs[i]! }))
    .sort((a, b) => b.p - a.p)
    .slice(0, 2)
    .map((x) => `${x.d} ${x.p.toFixed(2)}`)
    .join(', ');
}

/** Rows cleaning dropped, by reason, in words: `2 malformed, 3 bad price, 1 duplicate` (or `none`). */
export function droppedText(t: TickerSummary): string {
  const q = t.quality;
  if (q === undefined) return 'not reported';
  const parts = [
    [q.dropped.malformed, 'malformed'],
    [q.dropped.badPrice, 'bad price'],
    [q.dropped.duplicates, q.dropped.duplicates === 1 ? 'duplicate' : 'duplicates'],
  ] as const;
  const said = parts.filter(([n]) => n > 0).map(([n, what]) => `${n} ${what}`);
  return said.length > 0 ? said.join(', ') : 'none';
}

/** Tickers whose confidence is below UNCERTAIN_CONFIDENCE, apart, with the accuracy of the labelled rest. */
function uncertainSection(tickers: readonly TickerSummary[]): string[] {
  const lines = ['## Uncertain routes', ''];
  const unsure = tickers.filter((t) => t.uncertain === true);
  const sure = tickers.filter((t) => t.uncertain !== true);
  const labelled = sure.filter((t) => t.class !== undefined);
  const right = labelled.filter((t) => t.domain === t.class).length;
  const rest =
    labelled.length > 0
      ? `; ${right} of the ${labelled.length} labelled confident tickers (${pct(right / labelled.length)}) went to their own class`
      : '';
  lines.push(`A ticker is uncertain when its confidence is below ${UNCERTAIN_CONFIDENCE}. Confident: ${sure.length} of ${tickers.length}${rest}.`, '');
  if (unsure.length === 0) {
    lines.push('No uncertain tickers.', '');
    return lines;
  }
  lines.push('| ticker | class | routed to | confidence | top two domains |', '| --- | --- | --- | ---: | --- |');
  for (const t of unsure) lines.push(`| ${t.ticker} | ${classOf(t)} | ${t.domain} | ${t.confidence.toFixed(3)} | ${topTwo(t)} |`);
  lines.push('');
  return lines;
}

/** Tickers routed on fewer days than requested, with what cleaning dropped and the gaps in their data. */
function shortSection(tickers: readonly TickerSummary[]): string[] {
  const lines = ['## Short tickers', ''];
  const short = tickers.filter((t) => t.short === true);
  if (short.length === 0) {
    lines.push('None: every routed ticker got the days it asked for.', '');
    return lines;
  }
  lines.push(`${short.length} ticker${short.length === 1 ? '' : 's'} routed on fewer days than requested:`, '');
  lines.push('| ticker | routed / requested days | rows read | rows dropped | gaps (read / routed) |', '| --- | ---: | ---: | --- | ---: |');
  for (const t of short) {
    const q = t.quality;
    lines.push(
      `| ${t.ticker} | ${t.days} / ${t.requestedDays ?? '-'} | ${q?.rows ?? '-'} | ${droppedText(t)} | ${q ? `${q.gaps} / ${q.routedGaps}` : '-'} |`,
    );
  }
  lines.push('', 'Gaps are missing business days between bars (holidays count too): over all bars read, and between the first and last routed day.', '');
  return lines;
}

/** Tickers listed with their reasons in summary.md; summary.json carries every ticker's. */
export const REASONS_LISTED = 200;

/** Each routed ticker's three strongest reasons: the feature and its normalised value in the ticker's mean token. */
function reasonsSection(tickers: readonly TickerSummary[]): string[] {
  const lines = ['## Why each ticker went where it went', ''];
  const withReasons = tickers.filter((t) => t.reasons !== undefined);
  if (withReasons.length === 0) {
    lines.push('No reasons recorded in this run.', '');
    return lines;
  }
  lines.push(
    "The features that raised the chosen domain's log-probability most, measured by setting each back from its value " +
      "in the ticker's mean token to its training centre (0); values are normalised (docs/features.md).",
    '',
  );
  for (const t of withReasons.slice(0, REASONS_LISTED)) {
    const why = t.reasons!.map((r) => `${r.feature} ${r.value >= 0 ? '+' : '−'}${Math.abs(r.value).toFixed(2)}`).join(', ');
    lines.push(`- ${t.ticker} → ${t.domain}: ${why === '' ? 'no feature pushed it there on its own' : why}`);
  }
  if (withReasons.length > REASONS_LISTED) lines.push(`- … ${withReasons.length - REASONS_LISTED} more in summary.json`);
  lines.push('');
  return lines;
}

function ms(x: number): string {
  return x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`;
}
