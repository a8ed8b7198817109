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
