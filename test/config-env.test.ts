import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_MODEL_FILE, loadConfig, routerBackendChoice } from '../src/config.js';
import { defaultFeatureThreads, MAX_DEFAULT_FEATURE_THREADS } from '../workers/pool.js';

describe('loadConfig', () => {
  it('fills every default from an empty environment', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
      redisCluster: false,
      reportsDir: '/srv/app/reports',
      backend: 'auto',
      modelPath: DEFAULT_MODEL_FILE,
      dashboard: { host: '127.0.0.1', port: 3000, token: undefined, queueActions: false },
      logLevel: 'info',
      featureTtlSeconds: 86_400,
      runTtlSeconds: 604_800,
      prefix: 'moe',
      yahoo: { timeoutMs: 10_000, maxPerSecond: 2 },
      barCacheTtlSeconds: 86_400,
      jobLockMs: 30_000,
      shutdownTimeoutMs: 30_000,
      minHistoryBars: 60,
      shardSize: 1000,
      hostProcs: 1,
    });
    expect(path.isAbsolute(c.modelPath)).toBe(true);
  });

  it('reads the production knobs and refuses a lock under one second', () => {
    const c = loadConfig({ YAHOO_TIMEOUT_MS: '2500', YAHOO_MAX_PER_SECOND: '5', BAR_CACHE_TTL_SECONDS: '60', JOB_LOCK_MS: '2000', SHUTDOWN_TIMEOUT_MS: '500' });
    expect(c.yahoo).toEqual({ timeoutMs: 2500, maxPerSecond: 5 });
    expect([c.barCacheTtlSeconds, c.jobLockMs, c.shutdownTimeoutMs]).toEqual([60, 2000, 500]);
    expect(() => loadConfig({ JOB_LOCK_MS: '200' })).toThrow('Expected at least 1000 for JOB_LOCK_MS but received 200');
    expect(() => loadConfig({ YAHOO_MAX_PER_SECOND: '0' })).toThrow('Expected integer in 1..1000 for YAHOO_MAX_PER_SECOND but received "0"');
  });

  it('reads MOE_HOST_PROCS in 1..1024 and names it when it is not', () => {
    expect(loadConfig({ MOE_HOST_PROCS: '8' }).hostProcs).toBe(8);
    expect(loadConfig({ MOE_HOST_PROCS: '' }).hostProcs).toBe(1);
    expect(() => loadConfig({ MOE_HOST_PROCS: '0' })).toThrow('Expected integer in 1..1024 for MOE_HOST_PROCS but received "0"');
    expect(() => loadConfig({ MOE_HOST_PROCS: '1025' })).toThrow('Expected integer in 1..1024 for MOE_HOST_PROCS but received "1025"');
    expect(() => loadConfig({ MOE_HOST_PROCS: '2.5' })).toThrow('Expected integer in 1..1024 for MOE_HOST_PROCS but received "2.5"');
    expect(() => loadConfig({ MOE_HOST_PROCS: 'all' })).toThrow('Expected integer in 1..1024 for MOE_HOST_PROCS but received "all"');
  });

  it('gives each of P fetch processes on N CPUs about N / P feature threads, at least 1 and at most 4', () => {
    // One process alone: every CPU, up to the cap (the default of earlier releases).
    expect(defaultFeatureThreads(1, 2)).toBe(2);
    expect(defaultFeatureThreads(1, 16)).toBe(MAX_DEFAULT_FEATURE_THREADS);
    // Several processes split the host, rounded down (each main thread needs CPU too), never below one thread.
    expect([1, 2, 4, 8, 12, 16, 32].map((p) => defaultFeatureThreads(p, 16))).toEqual([4, 4, 4, 2, 1, 1, 1]);
    expect(defaultFeatureThreads(3, 16)).toBe(4);
    expect(defaultFeatureThreads(5, 16)).toBe(3);
    expect(defaultFeatureThreads(2, 2)).toBe(1);
    expect(defaultFeatureThreads(4, 2)).toBe(1);
    // P processes never take more threads together than the host has CPUs, unless each is down to one.
    for (const cpus of [1, 2, 4, 6, 16, 64]) {
      for (let p = 1; p <= 2 * cpus; p++) {
        const t = defaultFeatureThreads(p, cpus);
        expect(t).toBeGreaterThanOrEqual(1);
        if (t > 1) expect(p * t).toBeLessThanOrEqual(cpus);
      }
    }
    expect(defaultFeatureThreads()).toBeGreaterThanOrEqual(1);
    expect(() => defaultFeatureThreads(0, 16)).toThrow('Expected integer ≥ 1 for hostProcs but received 0');
    expect(() => defaultFeatureThreads(1, 1.5)).toThrow('Expected integer ≥ 1 for cpus but received 1.5');
  });

  it('reads MOE_SHARD_SIZE in 1..10000 and names it when it is not', () => {
    expect(loadConfig({ MOE_SHARD_SIZE: '250' }).shardSize).toBe(250);
    expect(() => loadConfig({ MOE_SHARD_SIZE: '0' })).toThrow('Expected integer in 1..10000 for MOE_SHARD_SIZE but received "0"');
    expect(() => loadConfig({ MOE_SHARD_SIZE: '10001' })).toThrow('Expected integer in 1..10000 for MOE_SHARD_SIZE but received "10001"');
    expect(() => loadConfig({ MOE_SHARD_SIZE: 'many' })).toThrow('Expected integer in 1..10000 for MOE_SHARD_SIZE but received "many"');
  });

  it('reads and normalises values', () => {
    const c = loadConfig(
      {
        REDIS_URL: 'rediss://cache:6380/2',
        REPORTS_DIR: 'out/r',
        MOE_BACKEND: 'CPU',
        MOE_MODEL: 'm.safetensors',
        DASHBOARD_HOST: '0.0.0.0',
        DASHBOARD_PORT: '8080',
        DASHBOARD_TOKEN: 'a-long-enough-token',
        DASHBOARD_QUEUE_ACTIONS: 'TRUE',
        LOG_LEVEL: 'debug',
        FEATURE_TTL_SECONDS: '600',
        MOE_PREFIX: 'moe-test_1',
      },
      '/w',
    );
    expect(c.redisUrl).toBe('rediss://cache:6380/2');
    expect(c.reportsDir).toBe('/w/out/r');
    expect(c.backend).toBe('cpu');
    expect(c.modelPath).toBe('/w/m.safetensors');
    expect(c.dashboard).toEqual({ host: '0.0.0.0', port: 8080, token: 'a-long-enough-token', queueActions: true });
    expect(c.featureTtlSeconds).toBe(600);
    expect(c.prefix).toBe('moe-test_1');
  });

  it('lists every invalid variable in one error, each with the message shape', () => {
    let err: unknown;
    try {
      loadConfig({
        REDIS_URL: 'http://x',
        MOE_BACKEND: 'gpu',
        DASHBOARD_PORT: '70000',
        LOG_LEVEL: 'loud',
        FEATURE_TTL_SECONDS: '-5',
        MOE_PREFIX: 'a:b',
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const ce = err as ConfigError;
    expect(ce.code).toBe('CONFIG_INVALID');
    expect(ce.problems).toEqual([
      'Expected redis:// or rediss:// URL for REDIS_URL but received "http://x"',
      'Expected one of auto, cuda, cpu for MOE_BACKEND but received "gpu"',
      'Expected one of fatal, error, warn, info, debug, trace, silent for LOG_LEVEL but received "loud"',
      'Expected integer in 1..65535 for DASHBOARD_PORT but received "70000"',
      'Expected integer in 1..9007199254740991 for FEATURE_TTL_SECONDS but received "-5"',
      'Expected 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit for MOE_PREFIX but received "a:b"',
    ]);
    expect(ce.message).toContain('MOE_BACKEND');
  });

  it('requires a dashboard token when the dashboard listens beyond loopback', () => {
    expect(() => loadConfig({ DASHBOARD_HOST: '0.0.0.0' })).toThrow(/DASHBOARD_TOKEN/);
    expect(() => loadConfig({ DASHBOARD_HOST: '0.0.0.0', DASHBOARD_TOKEN: 'short' })).toThrow(
      'Expected at least 16 characters for DASHBOARD_TOKEN but received 5',
    );
    expect(loadConfig({ DASHBOARD_HOST: 'localhost' }).dashboard.token).toBeUndefined();
    expect(loadConfig({ DASHBOARD_QUEUE_ACTIONS: '0' }).dashboard.queueActions).toBe(false);
    expect(() => loadConfig({ DASHBOARD_QUEUE_ACTIONS: 'yes' })).toThrow(
      'Expected true, false, 1 or 0 for DASHBOARD_QUEUE_ACTIONS but received "yes"',
    );
  });
});

describe('routerBackendChoice', () => {
  it('maps cpu to the SIMD backend and auto to auto', () => {
    expect(routerBackendChoice('cpu')).toBe('simd');
    expect(routerBackendChoice('auto')).toBe('auto');
  });

  it('passes cuda through: the router itself refuses it where no GPU is usable', () => {
    expect(routerBackendChoice('cuda')).toBe('cuda');
  });
});

describe('Redis Cluster configuration', () => {
  it('reads REDIS_CLUSTER_NODES as seed nodes and puts the prefix in a hash tag', () => {
    const c = loadConfig({ REDIS_CLUSTER_NODES: '10.0.0.1:7000, redis-b:7001,rediss://:s3cret@redis-c:7002', REDIS_URL: 'redis://ignored:6379' });
    expect(c.redisCluster).toBe(true);
    expect(c.redisUrl).toBe('redis://10.0.0.1:7000,redis://redis-b:7001,rediss://:s3cret@redis-c:7002');
    expect(c.prefix).toBe('{moe}');
    expect(loadConfig({ REDIS_CLUSTER_NODES: '[::1]:7000', MOE_PREFIX: 'prod' }).prefix).toBe('{prod}');
  });

  it('takes a REDIS_URL of several nodes as a cluster and keeps a prefix that has a hash tag', () => {
    const c = loadConfig({ REDIS_URL: 'redis://a:7000,redis://b', MOE_PREFIX: '{moe}-demo-1f2e' });
    expect(c.redisCluster).toBe(true);
    expect(c.redisUrl).toBe('redis://a:7000,redis://b:6379');
    expect(c.prefix).toBe('{moe}-demo-1f2e');
  });

  it('leaves a single server and its prefix as they are', () => {
    const c = loadConfig({ MOE_PREFIX: 'moe' });
    expect(c.redisCluster).toBe(false);
    expect(c.prefix).toBe('moe');
    expect(loadConfig({ MOE_PREFIX: '{moe}' }).prefix).toBe('{moe}');
  });

  it('names each malformed node entry and a malformed hash tag', () => {
    let err: unknown;
    try {
      loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000,127.0.0.1,http://x:1,h:70000,redis://h:7000/3,', MOE_PREFIX: '{a:b}' });
    } catch (e) {
      err = e;
    }
    expect((err as ConfigError).problems).toEqual([
      'Expected host:port or a redis:// or rediss:// URL for REDIS_CLUSTER_NODES entry 2 of 6 but received "127.0.0.1"',
      'Expected host:port or a redis:// or rediss:// URL for REDIS_CLUSTER_NODES entry 3 of 6 but received "http://x:1"',
      'Expected a port in 1..65535 for REDIS_CLUSTER_NODES entry 4 of 6 but received "h:70000"',
      'Expected database 0 (a Redis Cluster has no other) for REDIS_CLUSTER_NODES entry 5 of 6 but received "redis://h:7000/3"',
      'Expected host:port or a redis:// or rediss:// URL for REDIS_CLUSTER_NODES entry 6 of 6 but received ""',
      'Expected a leading hash tag {NAME} (NAME: 1-64 characters [A-Za-z0-9_.-] starting with a letter or digit), then only [A-Za-z0-9_.-], for MOE_PREFIX but received "{a:b}"',
    ]);
    expect(() => loadConfig({ REDIS_URL: 'redis://a:7000,a:7001' })).toThrow(
      'Expected a redis:// or rediss:// URL for REDIS_URL entry 2 of 2 but received "a:7001"',
    );
  });
});
