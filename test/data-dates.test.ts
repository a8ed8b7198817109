import { describe, expect, it } from 'vitest';
import { daysToIso, isoToDays } from '../src/data/dates.js';

describe('daysToIso', () => {
  it('agrees with Date for every day from 1800 to 2200 and at the ends of years 0000-9999', () => {
    const viaDate = (d: number) => new Date(d * 86_400_000).toISOString().slice(0, 10);
    for (let d = -62_091; d <= 84_006; d++) {
      if (daysToIso(d) !== viaDate(d)) throw new Error(`day ${d}: ${daysToIso(d)} vs ${viaDate(d)}`);
    }
    for (const d of [-719_528, -719_527, -1, 0, 1, 11_016, 2_932_895, 2_932_896]) expect(daysToIso(d)).toBe(viaDate(d));
    expect(daysToIso(-719_528)).toBe('0000-01-01');
    expect(daysToIso(2_932_896)).toBe('9999-12-31');
    expect(daysToIso(19_782)).toBe('2024-02-29');
  });

  it('round-trips with isoToDays and keeps Date behaviour outside whole days', () => {
    for (const iso of ['1970-01-01', '2000-02-29', '2023-12-31', '2100-03-01']) expect(daysToIso(isoToDays(iso))).toBe(iso);
    expect(isoToDays('2021-02-30')).toBeNaN();
    expect(daysToIso(0.5)).toBe('1970-01-01');
    expect(() => daysToIso(Number.NaN)).toThrow(RangeError);
  });
});
