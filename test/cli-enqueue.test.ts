import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { intFlag, listFlag, parseArgs, UsageError } from '../src/cli/args.js';
import { parseEnqueueArgs } from '../src/cli/enqueue.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function usageError(argv: string[]): string {
  try {
    parseEnqueueArgs(argv);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`expected a UsageError for ${argv.join(' ')}`);
}

describe('enqueue arguments', () => {
  it('parses tickers and options into a run request', () => {
    const a = parseEnqueueArgs(['aapl', 'TLT', 'gld', 'AAPL', '--source', 'sim', '--days=30', '--seed', '9', '--no-wait']);
    expect(a.request).toEqual({ tickers: ['AAPL', 'TLT', 'GLD'], source: 'sim', range: { days: 30 }, seed: 9 });
    expect(a.wait).toBe(false);
    const y = parseEnqueueArgs(['SPY', '--end', '2024-12-31']);
    expect(y.request).toEqual({ tickers: ['SPY'], source: 'yahoo', range: { days: 120, end: '2024-12-31' } });
    expect(y.wait).toBe(true);
    const c = parseEnqueueArgs(['SPY', '--source', 'csv', '--data-dir', REPO]);
    expect(c.request.dataDir).toBe(REPO);
  });

  it.each([
    [['AAPL', '--fast'], 'but received "--fast"'],
    [['AAPL', '-x'], 'Expected a known flag but received "-x"'],
    [['AAPL', '--days', '0'], 'Expected integer in 1..2520 for --days but received "0"'],
    [['AAPL', '--days', 'ten'], 'Expected integer in 1..2520 for --days but received "ten"'],
    [['AAPL', '--days'], 'Expected a value for --days but received nothing'],
    [['AAPL', '--source', 'bloomberg'], 'Expected one of sim, csv, yahoo for --source but received "bloomberg"'],
    [['AAPL', '--source', 'csv'], 'Expected --data-dir DIR for --source csv but received nothing'],
    [['AAPL', '--source', 'csv', '--data-dir', '/no/such/dir'], 'Expected an existing folder for --data-dir'],
    [['AAPL', '--data-dir', '/tmp'], 'Expected no --data-dir for --source yahoo'],
    [['AAPL', '--end', '2024-13-01'], 'Expected date YYYY-MM-DD for --end but received "2024-13-01"'],
    [['AAPL', '--seed', '1'], 'Expected no --seed for --source yahoo'],
    [['AAPL', 'BAD/../X'], 'for ticker but received "BAD/../X"'],
    [['--source', 'sim'], 'Expected at least one TICKER but received none'],
  ])('rejects %j', (argv, message) => {
    expect(usageError(argv)).toContain(message);
  });
});

describe('argv helpers', () => {
  it('read lists and bounded integers with exact messages', () => {
    const a = parseArgs(['--only', 'fetch,route,fetch', '--n=3'], { only: { type: 'string' }, n: { type: 'string' } });
    expect(listFlag(a, 'only', ['fetch', 'route', 'report'], [])).toEqual(['fetch', 'route']);
    expect(intFlag(a, 'n', 1, 1, 5)).toBe(3);
    const b = parseArgs(['--only', 'fetch,gpu'], { only: { type: 'string' } });
    expect(() => listFlag(b, 'only', ['fetch', 'route'], [])).toThrow('Expected one of fetch, route for --only but received "gpu"');
    expect(() => parseArgs(['--flag=1'], { flag: { type: 'boolean' } })).toThrow('Expected no value for --flag but received "1"');
    expect(parseArgs(['--', '--not-a-flag'], {}).positionals).toEqual(['--not-a-flag']);
  });
});

describe('enqueue CLI process', () => {
  function runCli(args: string[], env: Record<string, string> = {}) {
    return spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), path.join(REPO, 'src/cli/enqueue.ts'), ...args], {
      cwd: REPO,
      encoding: 'utf8',
      env: { ...process.env, ...env },
      timeout: 30_000,
    });
  }

  it('exits 2 with the reason on bad usage, before touching Redis', () => {
    const r = runCli(['AAPL', '--days', '-3'], { REDIS_URL: 'redis://127.0.0.1:1' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('enqueue: Expected integer in 1..2520 for --days but received "-3"');
    expect(r.stdout).toBe('');
  });

  it('exits 2 on invalid configuration', () => {
    const r = runCli(['AAPL'], { MOE_BACKEND: 'tpu' });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('Expected one of auto, cuda, cpu for MOE_BACKEND but received "tpu"');
  });

  it('exits 0 and prints usage for --help', () => {
    const r = runCli(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Usage: npm run enqueue -- TICKER...');
  });
});
