export { renderFigures, renderReports, type RenderFiguresOptions, type RenderReportsOptions } from './render-reports.js';
export { prepareSummaryJson, summaryJson } from './summary-json.js';
export { buildSummaryMarkdown } from './summary-markdown.js';
export { createRenderPool, warmRenderPool, type RenderPoolOptions } from './pool.js';
export { ReportError, type ReportErrorCode } from './errors.js';
export { classStats, marketCondition, CONDITION_THRESHOLDS, type ClassStats, type MarketCondition } from './market-condition.js';
export { REPORT_FILES, type DailyAggregate, type ReportInput, type RunSummary, type TickerSummary, type TickerSeries } from './types.js';
export { DAILY_CLASSES, dailyAggregate, mergeDaily, validateDailyAggregate } from './daily.js';
export { sampleReportInput, type SampleInputOptions } from './sample-input.js';
export {
  PSI_BANDS,
  compareRuns,
  driftLevel,
  populationStabilityIndex,
  routingMix,
  runRecord,
  universeId,
  type UniverseRunRecord,
} from './drift.js';
export type { DomainShares, DriftReport, RoutingMix } from './types.js';
