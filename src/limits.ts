/**
 * The limits that every layer checks input against, each defined once: the CLI's usage errors, the sources, the
 * job payload validators and the key builders all read them from here.
 */

/** Where bars come from (src/data/sources): the seeded simulator, a CSV folder, Yahoo Finance. */
export type SourceName = 'sim' | 'csv' | 'yahoo';
export const SOURCE_NAMES: readonly SourceName[] = ['sim', 'csv', 'yahoo'];

/** Most routed days one run may ask for (ten years of trading days). */
export const MAX_DAYS = 2520;

/**
 * Most tickers in one run. A run is cut into shards (`MAX_SHARD_SIZE`) and each route job holds one shard's features,
 * so what bounds a run is no longer one worker's memory but the report's per-ticker rows (about 1 KB each in
 * `summary.json`) and the run's enqueue: its flow is added in one transaction, so a run is whole or absent, and
 * 100,000 tickers took 50 s, 1.5 GB of the enqueuing process's memory and 154 MB of Redis on the 2-core VM.
 */
export const MAX_TICKERS = 100_000;

/**
 * Most tickers in one shard, and so in one route job: 10,000 tickers × 250 days × H 32 is 320 MB of float32
 * embeddings, about what one route worker should hold at a time.
 */
export const MAX_SHARD_SIZE = 10_000;

/**
 * Tickers per shard when `MOE_SHARD_SIZE` is unset: a shard of 1,000 tickers × 60 days routes in well under a second
 * on the CPU, so routing keeps pace with the fetch stage, and a parent with 1,000 children stays far from the flow
 * sizes at which BullMQ's dependency bookkeeping slows down (tens of thousands of children on one parent).
 */
export const DEFAULT_SHARD_SIZE = 1_000;

/**
 * Most shards in one run: the report job is their parent. A run that would need more at the configured shard size
 * gets larger shards (`shardCount` in jobs/enqueue-run.ts), never more than this many children on the report.
 */
export const MAX_SHARDS = 1_000;

/** Most routed days one fetch may ask for (about 40 years of trading days; evaluation reads whole histories). */
export const MAX_RANGE_DAYS = 10_000;

/**
 * A canonical ticker: 1–15 characters, upper-case letters, digits and `. - = ^` after a leading letter or digit
 * (Yahoo spells futures `GC=F`, currencies `EURUSD=X`, foreign listings `AZT.OL`). No `:` or `_`, so a ticker is safe
 * in Redis keys (`:` separates their parts), BullMQ job ids (`_` does) and file names.
 */
export const TICKER_PATTERN = /^[A-Z0-9][A-Z0-9.\-=^]{0,14}$/;
/** TICKER_PATTERN as people read it in error messages. */
export const TICKER_PATTERN_TEXT = '[A-Z0-9][A-Z0-9.-=^]{0,14}';

/**
 * A routed ticker whose confidence (mean probability of its chosen domain over its routed days) is below this is
 * `uncertain`: summary.json flags it, summary.md, the run page and `evaluate` list it apart and report accuracy on
 * the rest. Set from the held-out simulator histories (24 market histories, 2,400 instruments, the shipped model):
 * tickers at confidence 0.4–0.5 were right 17 % of the time, 0.5–0.6 65 %, 0.6–0.7 85 %, 0.7–0.8 96 %, above 0.9
 * 99.9 %; below 0.6 flags 1.7 % of them and leaves the rest 99.6 % right (below 0.5: 0.3 % and 99.1 %). On the 97
 * development tickers the shipped ensemble (models/README.md) is above it for every ticker over all days, 96 of 97
 * right; from a listing's first 60 or 120 bars it flags 4 tickers each.
 */
export const UNCERTAIN_CONFIDENCE = 0.6;
