/** The four expert domains, in router output order (index 0..3). */
export const DOMAINS = ['Equities', 'Fixed Income', 'Commodities', 'Derivatives'] as const;

export type Domain = (typeof DOMAINS)[number];

/** Number of domains `D` (router outputs). */
export const NUM_DOMAINS = DOMAINS.length;

/** Index of a domain name, or -1 when the name is not a domain. */
export function domainIndex(name: string): number {
  return (DOMAINS as readonly string[]).indexOf(name);
}

export function isDomain(name: string): name is Domain {
  return domainIndex(name) >= 0;
}

/** Spellings a labels file may use for each domain, letters only and lower case: plural or singular, any spacing. */
const LABEL_SPELLINGS: Record<string, Domain> = {
  equities: 'Equities',
  equity: 'Equities',
  fixedincome: 'Fixed Income',
  commodities: 'Commodities',
  commodity: 'Commodities',
  derivatives: 'Derivatives',
  derivative: 'Derivatives',
};

/**
 * The domain a hand-written label names (`Fixed Income`, `fixed_income`, `FIXED-INCOME`, `Equity` …: case, spaces,
 * underscores, hyphens and the plural do not matter), or undefined. For labels files only; payloads between the
 * pipeline's own stages carry the exact names and are checked with `isDomain`.
 */
export function parseDomainLabel(label: string): Domain | undefined {
  return LABEL_SPELLINGS[label.toLowerCase().replace(/[^a-z]/g, '')];
}
