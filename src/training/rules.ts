/**
 * The rule-based baseline: the volatility decision tree of the project this one re-creates, mapped onto our four
 * domains. It is the anchor the learned router must beat (`npm run evaluate -- --router rules`).
 *
 * The original tree names six overlapping bands of daily volatility: Fixed Income < 0.5 %, credit 0.2–0.8 %,
 * FX 0.5–1.3 %, Commodities 1–2.5 %, Equities 1.5–4 %, Derivatives > 3 %. Credit is Fixed Income here and currency
 * trusts are Derivatives, so the bands become, with every overlap split at its midpoint:
 *
 * | daily volatility (20-day) | domain | from |
 * | --- | --- | --- |
 * | < 0.65 % | Fixed Income | bonds < 0.5 %, credit to 0.8 % (credit/FX overlap 0.5–0.8 split at 0.65) |
 * | 0.65 – 1.15 % | Derivatives | FX (FX/commodities overlap 1.0–1.3 split at 1.15) |
 * | 1.15 – 2.0 % | Commodities | (commodities/equities overlap 1.5–2.5 split at 2.0) |
 * | 2.0 – 3.5 % | Equities | (equities/derivatives overlap 3–4 split at 3.5) |
 * | ≥ 3.5 % | Derivatives | leveraged, inverse and volatility products |
 *
 * A rule has no probabilities: the chosen domain gets 1, the others 0 (so its calibration error is 1 − accuracy).
 */
import { domainIndex, DOMAINS } from '../domains.js';
import type { Forwarder, RouteOutput } from './forwarder.js';

export const RULE_BANDS: readonly { below: number; domain: (typeof DOMAINS)[number] }[] = [
  { below: 0.0065, domain: 'Fixed Income' },
  { below: 0.0115, domain: 'Derivatives' },
  { below: 0.02, domain: 'Commodities' },
  { below: 0.035, domain: 'Equities' },
  { below: Number.POSITIVE_INFINITY, domain: 'Derivatives' },
];

const BAND_INDEX = RULE_BANDS.map((b) => domainIndex(b.domain));

/** Domain index the rules give a day with daily volatility `vol` (a fraction: 0.012 = 1.2 %). */
export function ruleDomain(vol: number): number {
  for (let i = 0; i < RULE_BANDS.length; i++) if (vol < RULE_BANDS[i]!.below) return BAND_INDEX[i]!;
  return BAND_INDEX[BAND_INDEX.length - 1]!;
}

/** The rules as a Forwarder, so evaluation treats both routers alike. Reads only `vol`. */
export function createRulesForwarder(): Forwarder {
  const D = DOMAINS.length;
  return {
    backend: 'rules',
    forward: async (_x: Float32Array, vol: Float32Array): Promise<RouteOutput> => {
      const n = vol.length;
      const probs = new Float32Array(n * D);
      const assign = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const d = ruleDomain(vol[i]!);
        assign[i] = d;
        probs[i * D + d] = 1;
      }
      return { probs, assign };
    },
    close: () => undefined,
  };
}
