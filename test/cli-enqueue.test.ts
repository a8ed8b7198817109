import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { intFlag, listFlag, parseArgs, UsageError } from '../src/cli/args.js';
import { benchTickers } from '../src/cli/bench-pipeline.js';
import { parseEnqueueArgs } from '../src/cli/enqueue.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { readRunMeta } from '../jobs/run-meta.js';
import { clearPrefix } from './helpers/redis.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-cli-enqueue-'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

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

describe('enqueue --tickers-file', () => {
  it('reads tickers separated by spaces, commas and lines, with # comments, after those typed', async () => {
    const file = path.join(tmp, 'book.txt');
    await writeFile(file, '# core book\nspy, tlt\r\nGLD  uso # oil\n\n  aapl,,SPY\n');
    expect(parseEnqueueArgs(['--tickers-file', file, '--source', 'sim']).request.tickers).toEqual(['SPY', 'TLT', 'GLD', 'USO', 'AAPL']);
    expect(parseEnqueueArgs(['QQQ', 'spy', `--tickers-file=${file}`]).request.tickers).toEqual(['QQQ', 'SPY', 'TLT', 'GLD', 'USO', 'AAPL']);
  });

  it('takes a universe of 10,000 tickers, far more than a command line holds', async () => {
    const file = path.join(tmp, 'ten-thousand.txt');
    const tickers = benchTickers(10_000);
    await writeFile(file, tickers.join('\n'));
    expect(parseEnqueueArgs(['--tickers-file', file, '--source', 'sim']).request.tickers).toEqual(tickers);
  });

  it('names the file and the first bad ticker with its line', async () => {
    const bad = path.join(tmp, 'bad.txt');
    await writeFile(bad, 'SPY TLT\n# ../comment is fine\nGLD, ../x, also/bad\n');
    expect(usageError(['--tickers-file', bad])).toBe(
      'bad.txt: Expected ticker of 1-15 characters A-Z 0-9 . - = ^ (starting with a letter or digit) for ticker but received "../x" (line 3)',
    );
    const empty = path.join(tmp, 'empty.txt');
    await writeFile(empty, '# nothing yet\n');
    expect(usageError(['--tickers-file', empty])).toBe('empty.txt: Expected at least one ticker for tickers but received none');
    const big = path.join(tmp, 'big.txt');
    await writeFile(big, benchTickers(100_001).join(' '));
    expect(usageError(['--tickers-file', big])).toBe('big.txt: Expected at most 100000 tickers for tickers but received 100001');
    expect(usageError(['--tickers-file', path.join(tmp, 'missing.txt')])).toBe(
      `Expected a readable file (or - for stdin) for --tickers-file but received ${JSON.stringify(path.join(tmp, 'missing.txt'))} (ENOENT)`,
    );
    expect(usageError(['--tickers-file', tmp])).toContain('(EISDIR)');
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
  function runCli(args: string[], env: Record<string, string> = {}, input?: string) {
    return spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), path.join(REPO, 'src/cli/enqueue.ts'), ...args], {
      cwd: REPO,
      encoding: 'utf8',
      env: { ...process.env, ...env },
      input,
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
    expect(r.stdout).toContain('--tickers-file F');
  });

  it('reads tickers from stdin with --tickers-file - and names stdin and the line of a bad one', async () => {
    const bad = runCli(['--tickers-file', '-', '--source', 'sim'], { REDIS_URL: 'redis://127.0.0.1:1' }, 'SPY\nTLT GLD\nB@D\n');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('enqueue: stdin: Expected ticker of 1-15 characters A-Z 0-9 . - = ^ (starting with a letter or digit) for ticker but received "B@D" (line 3)');

    // 3,000 tickers: about 21 kB, the size where `npm run enqueue -- $(cat file)` starts to strain a shell.
    const prefix = `t-cli-enq-${randomUUID().slice(0, 8)}`;
    const redis = createRedis('redis://127.0.0.1:6379');
    try {
      const tickers = benchTickers(3_000);
      const r = runCli(['--tickers-file', '-', '--source', 'sim', '--no-wait'], { MOE_PREFIX: prefix }, `# from a pipe\n${tickers.join('\n')}\n`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      // Three shards of the default 1,000 tickers.
      const runId = /^run (\S+): 3000 tickers from sim in 3 shards$/.exec(r.stdout.trim())?.[1];
      expect(runId, r.stdout).toBeDefined();
      expect((await readRunMeta(redis, prefix, runId!))?.tickers).toEqual(tickers);
    } finally {
      await clearPrefix(redis, prefix);
      await closeRedis(redis);
    }
  });
});
