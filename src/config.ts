import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_SHARD_SIZE, MAX_SHARD_SIZE } from './limits.js';

/**
 * Service configuration, read once from the environment and validated before anything connects or loads.
 * Every variable has a default so `npm run demo` needs no configuration.
 */

export const BACKEND_NAMES = ['auto', 'cuda', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The shipped router weights, `<repo>/models/router.safetensors` (same file as `DEFAULT_MODEL_PATH` of the model module). */
export const DEFAULT_MODEL_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'router.safetensors');

/** Shortest history a ticker routes from, in bars, when `MIN_HISTORY_BARS` is unset (docs/features.md, "Short histories"). */
export const DEFAULT_MIN_HISTORY_BARS = 60;
/**
 * Allowed values of `MIN_HISTORY_BARS`: from 20 bars (the 20-day volatility's window; the correlations and shape
 * statistics need 20 returns, so they read "no information" on such a ticker's first day) to 251, the full year of
 * warm-up that feature spec v3 required.
 */
export const MIN_HISTORY_BARS_RANGE = { min: 20, max: 251 } as const;

export interface Config {
  /**
   * Redis (BullMQ, feature blocks, run metadata): one server's URL or, when `redisCluster`, the cluster's seed nodes
   * as comma-separated `redis://host:port` URLs. @defaultValue `redis://127.0.0.1:6379` (env `REDIS_URL`, or
   * `REDIS_CLUSTER_NODES`, which wins when both are set)
   */
  redisUrl: string;
  /**
   * Connect with ioredis' `Cluster` to the seed nodes in `redisUrl` instead of to one server; `prefix` then carries a
   * hash tag so every key lands in one slot. @defaultValue false (true with `REDIS_CLUSTER_NODES`, or a `REDIS_URL`
   * naming several nodes)
   */
  redisCluster: boolean;
  /** Absolute folder that receives `<runId>/` report folders. @defaultValue `./reports` (env `REPORTS_DIR`) */
  reportsDir: string;
  /** Router backend wanted. @defaultValue `auto` (env `MOE_BACKEND`) */
  backend: BackendName;
  /** Absolute path of the router weights. @defaultValue `<repo>/models/router.safetensors` (env `MOE_MODEL`) */
  modelPath: string;
  dashboard: {
    /** @defaultValue `127.0.0.1` (env `DASHBOARD_HOST`) */
    host: string;
    /** @defaultValue 3000 (env `DASHBOARD_PORT`) */
    port: number;
    /** Required when the host is not loopback (env `DASHBOARD_TOKEN`). */
    token: string | undefined;
    /**
     * Lets bull-board retry, promote, clean and remove jobs; otherwise it only shows them.
     * @defaultValue false (env `DASHBOARD_QUEUE_ACTIONS`: `true`/`1` or `false`/`0`)
     */
    queueActions: boolean;
  };
  /** @defaultValue `info` (env `LOG_LEVEL`) */
  logLevel: LogLevel;
  /** Lifetime of feature blocks and routed series in Redis. @defaultValue 86400 (env `FEATURE_TTL_SECONDS`) */
  featureTtlSeconds: number;
  /** Lifetime of a run's metadata hash. @defaultValue 604800, one week (env `RUN_TTL_SECONDS`) */
  runTtlSeconds: number;
  /**
   * Namespace of every Redis key the project writes, BullMQ queues included; distinct prefixes never see each
   * other's runs (tests use one per test). With `redisCluster` a prefix without a hash tag is wrapped in one
   * (`moe` → `{moe}`, see `hashTaggedPrefix`). @defaultValue `moe` (env `MOE_PREFIX`)
   */
  prefix: string;
  yahoo: {
    /** Time-out of one Yahoo request, body included. @defaultValue 10000 (env `YAHOO_TIMEOUT_MS`) */
    timeoutMs: number;
    /** Requests per second to Yahoo, shared by every fetch worker on this Redis. @defaultValue 2 (env `YAHOO_MAX_PER_SECOND`) */
    maxPerSecond: number;
  };
  /** Lifetime of cached Yahoo bars; one fetch per ticker and range per day. @defaultValue 86400 (env `BAR_CACHE_TTL_SECONDS`) */
  barCacheTtlSeconds: number;
  /**
   * Lock of an active job; a worker that dies (kill -9, lost host) hands its jobs to others about this long after.
   * @defaultValue 30000 (env `JOB_LOCK_MS`)
   */
  jobLockMs: number;
  /**
   * On SIGTERM, how long workers may finish active jobs before handing the rest back to the queue and exiting.
   * @defaultValue 30000 (env `SHUTDOWN_TIMEOUT_MS`)
   */
  shutdownTimeoutMs: number;
  /**
   * Fewest clean bars a ticker needs to be routed (sources answer NO_DATA below it); its first token belongs to bar
   * `minHistoryBars − 1`. In 20..251. @defaultValue 60 (env `MIN_HISTORY_BARS`)
   */
  minHistoryBars: number;
  /**
   * Tickers per shard of a run: each shard is one route job over its own fetch jobs, routed as soon as they are done
   * (jobs/enqueue-run.ts). Read where runs are enqueued: `enqueue`, `demo`, `bench:pipeline` and the schedule worker.
   * In 1..`MAX_SHARD_SIZE` (10,000).
   * @defaultValue 1000 (env `MOE_SHARD_SIZE`)
   */
  shardSize: number;
  /**
   * Worker processes on this host that compute features (those serving the fetch stage) and so share its CPUs. A
   * fetch process without an explicit thread count (`workers --threads`) takes about CPUs / `hostProcs` feature
   * threads (`defaultFeatureThreads` in `workers/pool.ts`), so P processes on an N-core host together start about N
   * threads, not P × N. In 1..`MAX_HOST_PROCS`. @defaultValue 1 (env `MOE_HOST_PROCS`)
   */
  hostProcs: number;
}

/** Most worker processes `MOE_HOST_PROCS` may name: far more than any host has cores. */
export const MAX_HOST_PROCS = 1024;

export type ConfigErrorCode = 'CONFIG_INVALID' | 'BACKEND_UNAVAILABLE';

export class ConfigError extends Error {
  readonly code: ConfigErrorCode;
  /** Every problem found, one line each (all variables are checked before throwing). */
  readonly problems: string[];

  constructor(code: ConfigErrorCode, problems: string[]) {
    super(problems.length === 1 ? problems[0]! : `Invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = this.constructor.name;
    this.code = code;
    this.problems = problems;
  }
}

type Env = Record<string, string | undefined>;

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const PREFIX_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** A prefix that starts with a hash tag: `{moe}`, `{moe}-demo-1f2e`. */
const TAGGED_PREFIX_RE = /^\{[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\}[A-Za-z0-9_.-]{0,63}$/;

/**
 * The prefix with a Redis Cluster hash tag: unchanged when it starts with one, else wrapped whole (`moe` → `{moe}`).
 * Redis Cluster hashes only the tag of a key that has one, so every key under such a prefix (BullMQ's queue keys, run
 * hashes, feature blocks) lands in one slot; BullMQ needs that, since a flow's Lua scripts touch the keys of all
 * three queues at once and a cluster refuses keys of several slots in one command (CROSSSLOT).
 */
export function hashTaggedPrefix(prefix: string): string {
  return prefix.startsWith('{') ? prefix : `{${prefix}}`;
}

/**
 * The nodes of a `Config.redisUrl`: one URL, or the comma-separated seed nodes of a cluster. Throws on a value that
 * `loadConfig` would not have produced.
 */
export function redisNodeUrls(redisUrl: string): URL[] {
  return redisUrl.split(',').map((u) => new URL(u.trim()));
}

/**
 * One entry of REDIS_CLUSTER_NODES (`host:port`, or a redis:// / rediss:// URL for credentials and TLS) or of a
 * REDIS_URL naming several nodes (URLs only), as a normalised URL; undefined after pushing the problem.
 */
function clusterNode(entry: string, name: string, index: number, count: number, problems: string[]): string | undefined {
  const e = entry.trim();
  const where = count > 1 ? `${name} entry ${index + 1} of ${count}` : name;
  const bare = name === 'REDIS_CLUSTER_NODES' && !e.includes('://');
  const expected = bare || name === 'REDIS_CLUSTER_NODES' ? 'host:port or a redis:// or rediss:// URL' : 'a redis:// or rediss:// URL';
  const bareMatch = bare ? /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(e) : null;
  if (bare && bareMatch === null) {
    problems.push(`Expected ${expected} for ${where} but received ${show(entry)}`);
    return undefined;
  }
  if (bareMatch && (Number(bareMatch[2]) < 1 || Number(bareMatch[2]) > 65535)) {
    problems.push(`Expected a port in 1..65535 for ${where} but received ${show(entry)}`);
    return undefined;
  }
  let u: URL;
  try {
    u = new URL(bare ? `redis://${e}` : e);
  } catch {
    problems.push(`Expected ${expected} for ${where} but received ${show(entry)}`);
    return undefined;
  }
  if ((u.protocol !== 'redis:' && u.protocol !== 'rediss:') || u.hostname === '' || u.search !== '' || u.hash !== '') {
    problems.push(`Expected ${expected} for ${where} but received ${show(entry)}`);
    return undefined;
  }
  const port = Number(u.port || 6379);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    problems.push(`Expected a port in 1..65535 for ${where} but received ${show(entry)}`);
    return undefined;
  }
  if (u.pathname !== '' && u.pathname !== '/' && u.pathname !== '/0') {
    problems.push(`Expected database 0 (a Redis Cluster has no other) for ${where} but received ${show(entry)}`);
    return undefined;
  }
  u.port = String(port);
  u.pathname = '';
  return u.toString().replace(/\/$/, '');
}

/** REDIS_CLUSTER_NODES, else REDIS_URL: one server, or the seed nodes of a cluster. */
function readRedis(env: Env, problems: string[]): { redisUrl: string; redisCluster: boolean } {
  const nodesRaw = env.REDIS_CLUSTER_NODES?.trim();
  const urlRaw = env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379';
  const [name, raw] = nodesRaw ? ['REDIS_CLUSTER_NODES', nodesRaw] : ['REDIS_URL', urlRaw];
  const entries = raw.split(',');
  if (name === 'REDIS_URL' && entries.length === 1) {
    try {
      const u = new URL(urlRaw);
      if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error('protocol');
    } catch {
      problems.push(`Expected redis:// or rediss:// URL for REDIS_URL but received ${show(urlRaw)}`);
    }
    return { redisUrl: urlRaw, redisCluster: false };
  }
  const nodes = entries.map((e, i) => clusterNode(e, name, i, entries.length, problems));
  const ok = nodes.filter((n): n is string => n !== undefined);
  return { redisUrl: ok.length === nodes.length ? ok.join(',') : raw, redisCluster: true };
}

function show(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value);
}

function positiveInt(env: Env, name: string, fallback: number, problems: string[], max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1 || n > max) {
    problems.push(`Expected integer in 1..${max} for ${name} but received ${show(raw)}`);
    return fallback;
  }
  return n;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T, problems: string[]): T {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = raw.trim().toLowerCase();
  if (!(allowed as readonly string[]).includes(v)) {
    problems.push(`Expected one of ${allowed.join(', ')} for ${name} but received ${show(raw)}`);
    return fallback;
  }
  return v as T;
}

function readMinHistoryBars(env: Env, problems: string[]): number {
  const raw = env.MIN_HISTORY_BARS;
  if (raw === undefined || raw.trim() === '') return DEFAULT_MIN_HISTORY_BARS;
  const n = Number(raw);
  const { min, max } = MIN_HISTORY_BARS_RANGE;
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    problems.push(`Expected integer in ${min}..${max} for MIN_HISTORY_BARS but received ${show(raw)}`);
    return DEFAULT_MIN_HISTORY_BARS;
  }
  return n;
}

/**
 * `MIN_HISTORY_BARS` alone (the sources, the feature pool and `evaluate` read it without the rest of the
 * configuration); throws the ConfigError `loadConfig` would for a bad value.
 * @param env - variables to read. @defaultValue `process.env`
 */
export function minHistoryBars(env: Env = process.env): number {
  const problems: string[] = [];
  const n = readMinHistoryBars(env, problems);
  if (problems.length > 0) throw new ConfigError('CONFIG_INVALID', problems);
  return n;
}

/**
 * Reads and validates the configuration. Throws one ConfigError listing every invalid variable.
 * @param env - variables to read. @defaultValue `process.env`
 * @param cwd - base of relative paths. @defaultValue `process.cwd()`
 */
export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): Config {
  const problems: string[] = [];

  const { redisUrl, redisCluster } = readRedis(env, problems);

  const reportsDir = path.resolve(cwd, env.REPORTS_DIR?.trim() || './reports');
  const modelPath = path.resolve(cwd, env.MOE_MODEL?.trim() || DEFAULT_MODEL_FILE);
  const backend = oneOf(env, 'MOE_BACKEND', BACKEND_NAMES, 'auto', problems);
  const logLevel = oneOf(env, 'LOG_LEVEL', LOG_LEVELS, 'info', problems);

  const host = env.DASHBOARD_HOST?.trim() || '127.0.0.1';
  const port = positiveInt(env, 'DASHBOARD_PORT', 3000, problems, 65535);
  const token = env.DASHBOARD_TOKEN?.trim() || undefined;
  if (!LOOPBACK.has(host) && token === undefined) {
    problems.push(`Expected a non-empty DASHBOARD_TOKEN because DASHBOARD_HOST ${show(host)} is not loopback but received nothing`);
  }
  if (token !== undefined && token.length < 16) {
    problems.push(`Expected at least 16 characters for DASHBOARD_TOKEN but received ${token.length}`);
  }

  let queueActions = false;
  const actions = env.DASHBOARD_QUEUE_ACTIONS?.trim().toLowerCase();
  if (actions === 'true' || actions === '1') queueActions = true;
  else if (actions !== undefined && actions !== '' && actions !== 'false' && actions !== '0') {
    problems.push(`Expected true, false, 1 or 0 for DASHBOARD_QUEUE_ACTIONS but received ${show(env.DASHBOARD_QUEUE_ACTIONS ?? '')}`);
  }

  const featureTtlSeconds = positiveInt(env, 'FEATURE_TTL_SECONDS', 86_400, problems);
  const runTtlSeconds = positiveInt(env, 'RUN_TTL_SECONDS', 604_800, problems);

  const yahoo = {
    timeoutMs: positiveInt(env, 'YAHOO_TIMEOUT_MS', 10_000, problems, 300_000),
    maxPerSecond: positiveInt(env, 'YAHOO_MAX_PER_SECOND', 2, problems, 1_000),
  };
  const barCacheTtlSeconds = positiveInt(env, 'BAR_CACHE_TTL_SECONDS', 86_400, problems);
  const jobLockMs = positiveInt(env, 'JOB_LOCK_MS', 30_000, problems, 3_600_000);
  if (jobLockMs < 1000) problems.push(`Expected at least 1000 for JOB_LOCK_MS but received ${jobLockMs}`);
  const shutdownTimeoutMs = positiveInt(env, 'SHUTDOWN_TIMEOUT_MS', 30_000, problems, 3_600_000);
  const minHistory = readMinHistoryBars(env, problems);
  const shardSize = positiveInt(env, 'MOE_SHARD_SIZE', DEFAULT_SHARD_SIZE, problems, MAX_SHARD_SIZE);
  const hostProcs = positiveInt(env, 'MOE_HOST_PROCS', 1, problems, MAX_HOST_PROCS);

  const configuredPrefix = env.MOE_PREFIX?.trim() || 'moe';
  if (/[{}]/.test(configuredPrefix)) {
    if (!TAGGED_PREFIX_RE.test(configuredPrefix)) {
      problems.push(
        `Expected a leading hash tag {NAME} (NAME: 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit), then only [A-Za-z0-9_.-], for MOE_PREFIX but received ${show(configuredPrefix)}`,
      );
    }
  } else if (!PREFIX_RE.test(configuredPrefix)) {
    problems.push(`Expected 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit for MOE_PREFIX but received ${show(configuredPrefix)}`);
  }
  const prefix = redisCluster ? hashTaggedPrefix(configuredPrefix) : configuredPrefix;

  if (problems.length > 0) throw new ConfigError('CONFIG_INVALID', problems);
  return {
    redisUrl,
    redisCluster,
    reportsDir,
    backend,
    modelPath,
    dashboard: { host, port, token, queueActions },
    logLevel,
    featureTtlSeconds,
    runTtlSeconds,
    prefix,
    yahoo,
    barCacheTtlSeconds,
    jobLockMs,
    shutdownTimeoutMs,
    minHistoryBars: minHistory,
    shardSize,
    hostProcs,
  };
}

/**
 * Maps the configured backend onto the native router's choice: `auto` takes the GPU when one is usable and falls
 * back to the CPU (the router reports why); `cpu` means the SIMD backend (which itself falls back to scalar on CPUs
 * without AVX2); `cuda` requires a GPU, and creating the router fails with a clear error where there is none, rather
 * than silently running on the CPU while the operator believes the GPU is used.
 */
export function routerBackendChoice(backend: BackendName): 'auto' | 'simd' | 'cuda' {
  switch (backend) {
    case 'auto':
      return 'auto';
    case 'cpu':
      return 'simd';
    case 'cuda':
      return 'cuda';
  }
}
