import path from 'node:path';
import { fileURLToPath } from 'node:url';

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
  /** Redis (BullMQ, feature blocks, run metadata). @defaultValue `redis://127.0.0.1:6379` (env `REDIS_URL`) */
  redisUrl: string;
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
   * other's runs (tests use one per test). @defaultValue `moe` (env `MOE_PREFIX`)
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
}

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

  const redisUrl = env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379';
  try {
    const u = new URL(redisUrl);
    if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error('protocol');
  } catch {
    problems.push(`Expected redis:// or rediss:// URL for REDIS_URL but received ${show(redisUrl)}`);
  }

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

  const prefix = env.MOE_PREFIX?.trim() || 'moe';
  if (!PREFIX_RE.test(prefix)) {
    problems.push(`Expected 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit for MOE_PREFIX but received ${show(prefix)}`);
  }

  if (problems.length > 0) throw new ConfigError('CONFIG_INVALID', problems);
  return {
    redisUrl,
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
