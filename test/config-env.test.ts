import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_MODEL_FILE, loadConfig, routerBackendChoice } from '../src/config.js';

describe('loadConfig', () => {
  it('fills every default from an empty environment', () => {
    const c = loadConfig({}, '/srv/app');
    expect(c).toEqual({
      redisUrl: 'redis://127.0.0.1:6379',
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
