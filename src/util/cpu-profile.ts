/**
 * Where a thread's time went, by the code that spent it, from a V8 CPU profile (`node --cpu-prof`).
 *
 * Each sample is charged to the innermost frame on its stack that belongs to BullMQ, ioredis, piscina or the
 * project's own code (`ownRoot`); frames of Node itself and of other packages are passed over, so a socket write
 * under an ioredis command counts for ioredis, msgpackr under BullMQ for BullMQ, and chart.js under the report's
 * code for the project. A stack with none of them is `node` (module loading, timers, stream internals); V8's own
 * entries are `gc`, `program` and `idle`.
 */

export const PROFILE_BUCKETS = ['bullmq', 'ioredis', 'piscina', 'own', 'node', 'gc', 'program', 'idle'] as const;
export type ProfileBucket = (typeof PROFILE_BUCKETS)[number];

/** The parts of a `.cpuprofile` (Chrome DevTools' format) that are read. */
export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string }; children?: number[] }[];
  /** Microseconds on the system's monotonic clock (the clock of `process.hrtime`). */
  startTime: number;
  endTime: number;
  samples: number[];
  /** Microseconds from the previous sample (from `startTime` for the first). */
  timeDeltas: number[];
}

const PACKAGES: readonly ProfileBucket[] = ['bullmq', 'ioredis', 'piscina'];

function frameBucket(url: string, ownRoot: string): ProfileBucket | undefined {
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length);
    const name = rest.slice(0, rest.indexOf('/'));
    return (PACKAGES as readonly string[]).includes(name) ? (name as ProfileBucket) : undefined;
  }
  return url.includes(ownRoot) ? 'own' : undefined;
}

/**
 * Microseconds of the profile per bucket, over the samples taken in `[fromUs, toUs]` (the profile's clock) or all of
 * them. A sample stands for the time until the next one.
 */
export function profileBuckets(profile: CpuProfile, ownRoot: string, window?: { fromUs: number; toUs: number }): Record<ProfileBucket, number> {
  const out = Object.fromEntries(PROFILE_BUCKETS.map((b) => [b, 0])) as Record<ProfileBucket, number>;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const memo = new Map<number, ProfileBucket>();
  const classify = (leaf: number): ProfileBucket => {
    const fn = byId.get(leaf)?.callFrame.functionName;
    if (fn === '(garbage collector)') return 'gc';
    if (fn === '(idle)') return 'idle';
    if (fn === '(program)' || fn === '(root)') return 'program';
    for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) {
      const b = frameBucket(byId.get(id)?.callFrame.url ?? '', ownRoot);
      if (b !== undefined) return b;
    }
    return 'node';
  };
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i] ?? 0;
    const dt = profile.timeDeltas[i + 1] ?? 0;
    if (window !== undefined && (t < window.fromUs || t > window.toUs)) continue;
    const id = profile.samples[i]!;
    let b = memo.get(id);
    if (b === undefined) memo.set(id, (b = classify(id)));
    out[b] += dt;
  }
  return out;
}

/** The buckets of code that a sample can be charged to by its stack (not V8's own entries). */
export const CODE_BUCKETS = ['bullmq', 'ioredis', 'piscina', 'own', 'node'] as const;
export type CodeBucket = (typeof CODE_BUCKETS)[number];

/**
 * Each code bucket's share of a thread's samples, over every sample but V8's own (GC and `program` cannot be told
 * apart by caller, so they are spread over the rest in proportion; idle is not CPU). Undefined with no such samples.
 */
export function codeShares(b: Record<ProfileBucket, number>): Record<CodeBucket, number> | undefined {
  const total = CODE_BUCKETS.reduce((acc, k) => acc + b[k], 0);
  return total > 0 ? (Object.fromEntries(CODE_BUCKETS.map((k) => [k, b[k] / total])) as Record<CodeBucket, number>) : undefined;
}

/** Share of a thread's CPU spent in BullMQ and ioredis (codeShares); NaN with no samples. */
export function queueShare(b: Record<ProfileBucket, number>): number {
  const shares = codeShares(b);
  return shares === undefined ? Number.NaN : shares.bullmq + shares.ioredis;
}
