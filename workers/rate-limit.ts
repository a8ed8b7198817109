import type { RedisClient } from '../jobs/connection.js';
import { evalScript } from '../jobs/scripts.js';

/**
 * A request rate shared by every process that uses the same Redis key: at most `max` acquisitions per window of
 * `windowMs`, counted in Redis, so ten fetch workers on three hosts together stay under one limit. The window is
 * read from Redis' own clock (TIME), so hosts with skewed clocks still agree on where a window starts.
 */

export interface RateLimiterOptions {
  redis: RedisClient;
  /** Counter key (one per limited service), e.g. `<prefix>:ratelimit:yahoo`. */
  key: string;
  /** Requests allowed per window. */
  max: number;
  /** Window length. @defaultValue 1000 */
  windowMs?: number;
  /** Jitter source in [0, 1) for the wait after a full window. @defaultValue Math.random */
  random?: () => number;
}

// Fixed windows keyed by their index; a key outlives its window by one window so a late INCR cannot resurrect it
// without an expiry. Returns {0, now} when the caller may go (now: Redis' time of the grant, in ms), else {wait, now}
// with the milliseconds until the next window opens.
const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local idx = math.floor(now / window)
local key = KEYS[1] .. ':' .. idx
local n = redis.call('INCR', key)
if n == 1 then redis.call('PEXPIRE', key, window * 2) end
if n <= tonumber(ARGV[1]) then return {0, now} end
return {(idx + 1) * window - now, now}
`;

export class RedisRateLimiter {
  readonly max: number;
  readonly windowMs: number;
  private readonly redis: RedisClient;
  private readonly key: string;
  private readonly random: () => number;

  constructor(opts: RateLimiterOptions) {
    if (!Number.isSafeInteger(opts.max) || opts.max < 1) throw new RangeError(`Expected positive integer for max but received ${String(opts.max)}`);
    const windowMs = opts.windowMs ?? 1000;
    if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`Expected positive integer for windowMs but received ${String(windowMs)}`);
    this.redis = opts.redis;
    this.key = opts.key;
    this.max = opts.max;
    this.windowMs = windowMs;
    this.random = opts.random ?? Math.random;
  }

  /**
   * Resolves when one more request fits the shared rate, with the grant's time on Redis' clock (ms since the epoch,
   * the clock the windows are counted by); waits for later windows as long as needed.
   */
  async acquire(): Promise<number> {
    for (;;) {
      const [wait, now] = ((await evalScript(this.redis, ACQUIRE, 1, this.key, this.max, this.windowMs)) as (number | string)[]).map(Number) as [number, number];
      if (wait <= 0) return now;
      // Spread the waiters over the first tenth of the next window instead of waking them all at its first tick.
      await new Promise((r) => setTimeout(r, wait + Math.floor(this.random() * this.windowMs * 0.1)));
    }
  }
}
