import { describe, expect, it } from 'vitest';
import { simulatedTokens, simulatedTokensParallel } from '../src/training/tokens.js';
import type { RegimeFamily } from '../src/data/sim/regimes.js';
import { siblingTaskFile } from '../src/util/task-pool.js';

describe('simulated token sets', () => {
  it('are the same bit for bit whether the seeds run on worker threads or here', async () => {
    const opts = { seeds: [31, 32, 33], tickersPerSubtype: 1, days: 320, contextDropout: 0.5, newListingShare: 0.3, familyOf: (s: number): RegimeFamily => (s % 2 === 0 ? 'crisis-2008' : 'calm-bull') };
    const here = simulatedTokens(16, opts);
    const threaded = await simulatedTokensParallel(16, opts, 2);
    expect(here.size).toBeGreaterThan(1000);
    expect(threaded.size).toBe(here.size);
    expect(Buffer.from(threaded.x.buffer).equals(Buffer.from(here.x.buffer))).toBe(true);
    expect(Buffer.from(threaded.vol.buffer).equals(Buffer.from(here.vol.buffer))).toBe(true);
    expect(Buffer.from(threaded.risk.buffer).equals(Buffer.from(here.risk.buffer))).toBe(true);
    expect(Buffer.from(threaded.labels).equals(Buffer.from(here.labels))).toBe(true);
    expect(threaded.tickers).toEqual(here.tickers);
    // Names carry their history when there are several; families follow familyOf.
    expect(here.tickers[0]!.ticker).toMatch(/@31$/);
    expect(new Set(here.tickers.map((t) => `${t.seed}:${t.family}`))).toEqual(new Set(['31:calm-bull', '32:crisis-2008', '33:calm-bull']));
    await expect(simulatedTokensParallel(16, opts, 0)).rejects.toThrow('Expected integer ≥ 1 for threads but received 0');
  });

  it('finds a task module beside its caller, or says which files it looked for', () => {
    expect(siblingTaskFile(new URL('../src/training/tokens.ts', import.meta.url), 'tokens.task').pathname).toMatch(/src\/training\/tokens\.task\.ts$/);
    expect(() => siblingTaskFile(import.meta.url, 'no-such.task')).toThrow(/^Expected a task module no-such\.task\.ts, \.js or \.mjs but found none of .*no-such\.task\.ts, .*no-such\.task\.js, .*no-such\.task\.mjs$/);
  });
});
