import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { main, weakestSubtypes } from '../src/cli/study.js';
import type { CoverageRow } from '../src/training/coverage.js';

const marketData = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../shared/market-data');
const haveMarketData = existsSync(path.join(marketData, 'labels.csv'));

/** `npm run study`: bad flags are refused with exit 2 and a message naming the flag, before any training. */
async function study(args: string[]): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  const error = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void err.push(String(m)));
  const log = vi.spyOn(console, 'log').mockImplementation(() => undefined);
  try {
    return { code: await main(args), err: err.join('\n') };
  } finally {
    error.mockRestore();
    log.mockRestore();
  }
}

describe('study --leave-one-family-out', () => {
  it('refuses an embedding size other than 16 or 32, an unknown family and no training histories, with exit 2', async () => {
    const hidden = await study(['--leave-one-family-out', '--hidden', '24']);
    expect(hidden.code).toBe(2);
    expect(hidden.err).toContain('Expected 16 or 32 for --hidden but received 24');
    const family = await study(['--leave-one-family-out', '--families', 'crash-1929']);
    expect(family.code).toBe(2);
    expect(family.err).toMatch(/crash-1929/);
    expect((await study([])).code).toBe(2);
    const histories = await study(['--leave-one-family-out', '--train-seeds', '0']);
    expect(histories.code).toBe(2);
    expect(histories.err).toContain('Expected integer in 1..1000 for --train-seeds but received "0"');
  });

  it('refuses an ensemble of one seed, and --seed beside --seeds, with exit 2', async () => {
    const one = await study(['--leave-one-family-out', '--seeds', '7']);
    expect(one.code).toBe(2);
    expect(one.err).toContain('Expected 2 to 8 distinct integer seeds in [0, 2147483647], comma-separated, for --seeds but received "7"');
    const both = await study(['--leave-one-family-out', '--seeds', '7,11', '--seed', '7']);
    expect(both.code).toBe(2);
    expect(both.err).toContain('Expected --seed N or --seeds LIST but received both');
  });

  it('refuses --real-folds (no real folder is scored) and a missing --real-data folder, with exit 2', async () => {
    const folds = await study(['--leave-one-family-out', '--real-data', '.', '--real-folds', '5']);
    expect(folds.code).toBe(2);
    expect(folds.err).toContain('Expected no --real-folds with study');
    const missing = await study(['--leave-one-family-out', '--real-data', '/no/such/folder']);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('Expected a folder for --real-data but received "/no/such/folder" (not a folder)');
    const orphan = await study(['--leave-one-family-out', '--real-listings', '2']);
    expect(orphan.code).toBe(2);
    expect(orphan.err).toContain('Expected --real-data DIR with --real-listings but received none');
  });

  it('names the weakest sub-types in ascending order', () => {
    expect(weakestSubtypes({ stock: 0.97, 'credit-hy': 0.34, 'leveraged-2x': 0.78, inverse: 0.99 }, 2)).toBe('credit-hy 34.0 %, leveraged-2x 78.0 %');
  });
});

describe('study --coverage', () => {
  it('refuses no --real-data, a training flag and neither mode, with exit 2', async () => {
    const none = await study(['--coverage']);
    expect(none.code).toBe(2);
    expect(none.err).toContain('Expected --real-data DIR with --coverage but received none');
    const seeds = await study(['--coverage', '--real-data', '.', '--seeds', '7,11']);
    expect(seeds.code).toBe(2);
    expect(seeds.err).toContain('with --coverage but received --seeds');
    const neither = await study(['--hidden', '32']);
    expect(neither.code).toBe(2);
    expect(neither.err).toContain('Expected --leave-one-family-out or --coverage but received neither');
  });

  it.skipIf(!haveMarketData)('names a real series whose volume no simulated fund of its class shows, and not a plain one', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'moe-coverage-'));
    try {
      // GLD as it is, and GLD whose volume jumps a thousandfold every other day: its day-over-day volume changes are
      // far beyond any simulated commodity fund's.
      const gld = (await readFile(path.join(marketData, 'GLD.csv'), 'utf8')).trim().split('\n');
      const [header, ...rows] = gld;
      const v = header!.split(',').indexOf('volume');
      const jumpy = rows.map((line, i) => {
        const cells = line.split(',');
        cells[v] = String(Number(cells[v]) * (i % 2 === 0 ? 1000 : 1));
        return cells.join(',');
      });
      await writeFile(path.join(dir, 'GLD.csv'), `${gld.join('\n')}\n`);
      await writeFile(path.join(dir, 'JUMPY.csv'), `${[header, ...jumpy].join('\n')}\n`);
      await writeFile(path.join(dir, 'labels.csv'), 'ticker,class\nGLD,Commodities\nJUMPY,Commodities\n');
      const out = path.join(dir, 'coverage.json');
      const r = await study(['--coverage', '--real-data', dir, '--real-context-dir', marketData, '--hidden', '32', '--train-seeds', '2', '--json', out]);
      expect(r.code).toBe(0);
      const { histories, rows: got } = JSON.parse(await readFile(out, 'utf8')) as { histories: number; rows: CoverageRow[] };
      expect(histories).toBe(2);
      const byTicker = new Map(got.map((row) => [row.ticker, row]));
      const volume = (t: string) => byTicker.get(t)!.outside.find((o) => o.feature === 'volume_change_sd_60');
      expect(volume('JUMPY')).toBeDefined();
      expect(volume('JUMPY')!.value).toBeGreaterThan(volume('JUMPY')!.high);
      expect(volume('GLD')).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
