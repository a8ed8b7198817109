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

describe('isoToDays', () => {
  // The definition it replaces for speed: strict YYYY-MM-DD, Date.parse, and no roll-over into the next month.
  const viaDate = (iso: string): number => {
    if (!/^\d{4}-\d{2}-\d{2}$/.test(iso)) return Number.NaN;
    const days = Date.parse(`${iso}T00:00:00Z`) / 86_400_000;
    return Number.isFinite(days) && daysToIso(days) === iso ? days : Number.NaN;
  };

  it('agrees with Date.parse on every valid date 1800-2200 and on every month/day field combination', () => {
    for (let d = -62_091; d <= 84_006; d++) {
      const iso = daysToIso(d);
      if (isoToDays(iso) !== d) throw new Error(`${iso}: ${isoToDays(iso)} vs ${d}`);
    }
    for (const y of [0, 1, 4, 100, 400, 1900, 1999, 2000, 2023, 2024, 2100, 9999]) {
      for (let m = 0; m <= 13; m++) {
        for (let d = 0; d <= 32; d++) {
          const iso = `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`;
          if (!Object.is(isoToDays(iso), viaDate(iso))) throw new Error(`${iso}: ${isoToDays(iso)} vs ${viaDate(iso)}`);
        }
      }
    }
  });

  it('rejects anything but ten characters of YYYY-MM-DD', () => {
    for (const bad of ['', '2021-1-01', '2021-01-01 ', ' 2021-01-01', '2021/01/01', '2021-01-0a', '20a1-01-01', '2021-01-01\n', '+02021-01-01', '２０２１-01-01', '2021-02-29', '1900-02-29', '2021-13-01', '2021-00-10', '2021-04-31']) {
      expect(isoToDays(bad), JSON.stringify(bad)).toBeNaN();
    }
    expect(isoToDays(42 as unknown as string)).toBeNaN();
    expect(isoToDays('2000-02-29')).toBe(11_016);
    expect(isoToDays('2024-02-29')).toBe(19_782);
  });
});
