import { REPORT_FILES } from '../report/types.js';
import type { RunView } from './runs.js';

/** Server-rendered pages of the dashboard: plain HTML and CSS, no script, so they work behind any proxy. */

/** Seconds between reloads of a page that shows an active run. */
export const REFRESH_SECONDS = 3;

export const PNG_FILES = [REPORT_FILES.routing, REPORT_FILES.conditions, REPORT_FILES.timeSeries, REPORT_FILES.performance] as const;

const PNG_TITLES: Record<string, string> = {
  [REPORT_FILES.routing]: 'Expert routing',
  [REPORT_FILES.conditions]: 'Market conditions',
  [REPORT_FILES.timeSeries]: 'Time series and drift',
  [REPORT_FILES.performance]: 'Performance',
};

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

const STYLE = `
body{font:14px/1.45 "DejaVu Sans",system-ui,sans-serif;margin:0;color:#222;background:#f6f6f6}
header{background:#0072B2;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header h1{font-size:18px;margin:0}header a{color:#fff}
main{padding:12px 20px;max-width:1500px}
.run{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:0 0 14px}
.run h2{font-size:15px;margin:0 0 6px;display:flex;gap:12px;align-items:center;flex-wrap:wrap}
.badge{font-size:12px;padding:1px 8px;border-radius:10px;color:#fff;background:#7F7F7F}
.badge.finished{background:#009E73}.badge.failed{background:#D55E00}
.badge.routing,.badge.reporting,.badge.queued{background:#E69F00;color:#222}
dl{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:2px 16px;margin:4px 0 8px}
dt{font-size:11px;color:#666;text-transform:uppercase}dd{margin:0 0 4px}
.thumbs{display:grid;grid-template-columns:repeat(4,1fr);gap:8px}
.thumbs figure{margin:0}.thumbs img{width:100%;border:1px solid #ddd;background:#fff}
figcaption{font-size:12px;color:#555}
.full img{max-width:100%;border:1px solid #ddd;margin:0 0 14px;background:#fff}
.error{color:#D55E00}
table{border-collapse:collapse;margin:6px 0 12px}td,th{border:1px solid #ddd;padding:2px 8px}
th{background:#f0f0f0}.summary{background:#fff;border:1px solid #ddd;padding:4px 18px;border-radius:6px}
progress{width:140px}`;

function page(title: string, body: string, refresh: boolean): string {
  return [
    '<!doctype html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<title>${escapeHtml(title)}</title>`,
    // Reload while something is still moving; a finished page stays put (no flicker, no needless scraping).
    refresh ? `<meta http-equiv="refresh" content="${REFRESH_SECONDS}">` : '',
    `<style>${STYLE}</style></head><body>`,
    '<header><h1>moe-router</h1><a href="/">Runs</a><a href="/queues">Queues</a><a href="/metrics">Metrics</a></header>',
    `<main>${body}</main></body></html>`,
  ].join('\n');
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const m = Math.floor(ms / 60_000);
  return m < 60 ? `${m} min ${Math.round((ms % 60_000) / 1000)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

const fileUrl = (runId: string, file: string): string => `/runs/${runId}/files/${encodeURIComponent(file)}`;

function tickerList(t: readonly string[], count: number = t.length): string {
  const shown = t.slice(0, 8).join(', ');
  return count > 8 ? `${shown}, … (${count})` : shown;
}

/** `detail`: full-size images; `failedTable`: list failures (the run page does when it has no summary.md). */
function runCard(r: RunView, detail: boolean, failedTable = false): string {
  const pct = Math.round(r.progress * 100);
  const stage = r.active ? `${r.fetchedDone} of ${r.tickerCount} fetched${r.status === 'reporting' ? ', reporting' : ''}` : `${r.routed ?? 0} routed`;
  const fields: [string, string][] = [
    ['progress', `<progress max="100" value="${pct}"></progress> ${escapeHtml(stage)}`],
    ['shards', `${r.shardsRouted} of ${r.shards} routed`],
    ['tickers', `${r.tickerCount}: ${escapeHtml(tickerList(r.tickers, r.tickerCount))}`],
    ['failures', String(r.failures)],
    ['duration', `${formatDuration(r.durationMs)}${r.active ? ' so far' : ''}`],
    ['backend', escapeHtml(r.backend ?? '—')],
    ['source', escapeHtml(r.source)],
    ['created', escapeHtml(r.createdAt)],
  ];
  if (r.meanConfidence !== undefined) fields.push(['mean confidence', r.meanConfidence.toFixed(3)]);
  // The tables (confidence with the top two domains, rows dropped by reason, gaps) are summary.md's, rendered below.
  if (r.uncertainTickers.length > 0) {
    const list = r.uncertainTickers.map((t) => `${t.ticker} (${t.confidence.toFixed(2)})`);
    fields.push(['uncertain', `${r.uncertainTickers.length}: ${escapeHtml(tickerList(list))}`]);
  }
  if (r.shortTickers.length > 0) {
    const list = r.shortTickers.map((t) => `${t.ticker} (${t.days}/${t.requestedDays} days)`);
    fields.push(['short', `${r.shortTickers.length}: ${escapeHtml(tickerList(list))}`]);
  }
  if (r.drift) {
    fields.push([
      'drift',
      `PSI ${r.drift.psi.toFixed(3)} (${escapeHtml(r.drift.level)}), ${r.drift.changed} changed vs <a href="/runs/${escapeHtml(r.drift.previousRunId)}">${escapeHtml(r.drift.previousRunId.slice(0, 8))}</a>`,
    ]);
  }
  const parts = [
    `<section class="run" data-run-id="${r.runId}" data-status="${r.status}">`,
    `<h2><a href="/runs/${r.runId}">run ${r.runId.slice(0, 8)}</a><span class="badge ${r.status}">${r.status}</span>`,
    r.hasReport
      ? `<small><a href="/runs/${r.runId}#summary">summary</a> · <a href="${fileUrl(r.runId, REPORT_FILES.summaryMd)}">summary.md</a> · <a href="${fileUrl(r.runId, REPORT_FILES.summaryJson)}">summary.json</a></small>`
      : '',
    '</h2>',
    `<dl>${fields.map(([k, v]) => `<div><dt>${k}</dt><dd>${v}</dd></div>`).join('')}</dl>`,
  ];
  if (r.error) parts.push(`<p class="error">${escapeHtml(r.error)}</p>`);
  if (r.hasReport) {
    const imgs = PNG_FILES.map(
      (f) =>
        `<figure><a href="${fileUrl(r.runId, f)}"><img src="${fileUrl(r.runId, f)}" alt="${escapeHtml(PNG_TITLES[f] ?? f)} of run ${r.runId}"${detail ? '' : ' loading="lazy"'}></a><figcaption>${escapeHtml(PNG_TITLES[f] ?? f)}</figcaption></figure>`,
    );
    parts.push(`<div class="${detail ? 'full' : 'thumbs'}">${imgs.join('')}</div>`);
  } else if (!r.active) {
    parts.push('<p>No report files in this dashboard\'s REPORTS_DIR for this run (written on another host, or removed).</p>');
  }
  if (failedTable && r.failedTickers.length > 0) {
    parts.push('<h3>Failed tickers</h3><table><tr><th>ticker</th><th>reason</th></tr>');
    for (const f of r.failedTickers) parts.push(`<tr><td>${escapeHtml(f.ticker)}</td><td>${escapeHtml(f.reason)}</td></tr>`);
    parts.push('</table>');
  }
  parts.push('</section>');
  return parts.join('\n');
}

export function runsPage(runs: readonly RunView[]): string {
  const active = runs.filter((r) => r.active).length;
  const head = `<p>${runs.length} run${runs.length === 1 ? '' : 's'}, newest first${active > 0 ? `; ${active} active, this page reloads every ${REFRESH_SECONDS} s` : ''}.</p>`;
  const body = runs.length === 0 ? '<p>No runs yet. Start one with <code>npm run enqueue -- SPY TLT GLD</code>.</p>' : runs.map((r) => runCard(r, false)).join('\n');
  return page('moe-router runs', head + body, active > 0);
}

export function runPage(run: RunView, summaryMarkdown: string | undefined): string {
  const summary = summaryMarkdown === undefined ? '' : `<div class="summary" id="summary">${markdownToHtml(summaryMarkdown)}</div>`;
  return page(`moe-router run ${run.runId}`, runCard(run, true, summaryMarkdown === undefined) + summary, run.active);
}

export function notFoundPage(what: string): string {
  return page('not found', `<p>${escapeHtml(what)}</p>`, false);
}

// -- the Markdown of summary.md ----------------------------------------------------------------------------------

function inline(text: string): string {
  return escapeHtml(text)
    .replace(/`([^`]+)`/g, '<code>$1</code>')
    .replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>');
}

function tableCells(line: string): string[] {
  // Cells are split on pipes that are not escaped (`\|` inside a failure reason).
  const body = line.trim().replace(/^\|/, '').replace(/\|$/, '');
  return body.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/**
 * HTML of the Markdown that `buildSummaryMarkdown` writes: headings, paragraphs, pipe tables, dash lists, inline
 * code and bold. Everything is escaped first; nothing else of Markdown is needed or recognised.
 */
export function markdownToHtml(md: string): string {
  const out: string[] = [];
  const lines = md.split('\n');
  let i = 0;
  while (i < lines.length) {
    const line = lines[i]!;
    if (line.trim() === '') {
      i++;
    } else if (/^#{1,6} /.test(line)) {
      const level = line.indexOf(' ');
      out.push(`<h${level}>${inline(line.slice(level + 1))}</h${level}>`);
      i++;
    } else if (line.trimStart().startsWith('|')) {
      const rows: string[][] = [];
      while (i < lines.length && lines[i]!.trimStart().startsWith('|')) rows.push(tableCells(lines[i++]!));
      const isRule = (r: string[]) => r.every((c) => /^:?-+:?$/.test(c));
      const header = rows.length > 1 && isRule(rows[1]!) ? rows[0] : undefined;
      const bodyRows = header ? rows.slice(2) : rows;
      out.push('<table>');
      if (header) out.push(`<tr>${header.map((c) => `<th>${inline(c)}</th>`).join('')}</tr>`);
      for (const r of bodyRows) out.push(`<tr>${r.map((c) => `<td>${inline(c)}</td>`).join('')}</tr>`);
      out.push('</table>');
    } else if (line.startsWith('- ')) {
      out.push('<ul>');
      while (i < lines.length && lines[i]!.startsWith('- ')) out.push(`<li>${inline(lines[i++]!.slice(2))}</li>`);
      out.push('</ul>');
    } else {
      // The first line is always taken, so every branch consumes at least one line.
      const para: string[] = [lines[i++]!];
      while (i < lines.length && lines[i]!.trim() !== '' && !/^(#{1,6} |\||- )/.test(lines[i]!.trimStart())) para.push(lines[i++]!);
      out.push(`<p>${inline(para.join(' '))}</p>`);
    }
  }
  return out.join('\n');
}
