import path from 'node:path';

/**
 * The import graph of the project's TypeScript and the layer rule that docs/architecture.md states. Layers are
 * listed lowest first; a module may import its own group and any group of a lower rank, nothing else.
 */
export interface Layer {
  name: string;
  rank: number;
  /** Path prefixes (or exact files) that belong to the layer. */
  paths: readonly string[];
}

export const LAYERS: readonly Layer[] = [
  { name: 'foundation', rank: 0, paths: ['src/domains.ts', 'src/config.ts', 'src/log.ts', 'src/limits.ts', 'src/util/'] },
  { name: 'data', rank: 1, paths: ['src/data/types.ts', 'src/data/errors.ts', 'src/data/validate.ts', 'src/data/dates.ts', 'src/data/clean.ts', 'src/data/universe.ts'] },
  { name: 'data/features', rank: 2, paths: ['src/data/features/'] },
  { name: 'data/sim', rank: 3, paths: ['src/data/sim/'] },
  { name: 'data/sources', rank: 4, paths: ['src/data/sources/'] },
  { name: 'router', rank: 5, paths: ['src/router/'] },
  { name: 'report', rank: 5, paths: ['src/report/'] },
  { name: 'training', rank: 6, paths: ['src/training/'] },
  { name: 'jobs', rank: 7, paths: ['jobs/'] },
  { name: 'workers', rank: 8, paths: ['workers/'] },
  { name: 'dashboard', rank: 9, paths: ['src/dashboard/'] },
  { name: 'cli', rank: 10, paths: ['src/cli/'] },
];

export function layerOf(file: string): Layer | undefined {
  return LAYERS.find((l) => l.paths.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p)));
}

const IMPORT_RE = /(?:^|[;\s])(?:import|export)\s+(?:type\s+)?(?:[^'";]*?\sfrom\s+)?['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)/g;

/** Relative imports of each file, resolved to repository paths (`.js` specifiers name `.ts` files). */
export function importGraph(files: readonly string[], read: (file: string) => string): Map<string, string[]> {
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const text = read(f).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    const deps = new Set<string>();
    for (const m of text.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2];
      if (spec === undefined) continue;
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), spec)).replace(/\.js$/, '.ts');
      if (known.has(target)) deps.add(target);
    }
    graph.set(f, [...deps].sort());
  }
  return graph;
}

/** `a (layer) imports b (layer)` for every import that goes up a layer or sideways to a peer group. */
export function layerViolations(graph: ReadonlyMap<string, readonly string[]>): string[] {
  const out: string[] = [];
  for (const [from, deps] of graph) {
    const lf = layerOf(from);
    for (const to of deps) {
      const lt = layerOf(to);
      if (!lf || !lt) continue;
      if (lt === lf || lt.rank < lf.rank) continue;
      out.push(`${from} (${lf.name}) imports ${to} (${lt.name})`);
    }
  }
  return out.sort();
}

/** Strongly connected components of more than one module (Tarjan), each as a sorted list of files. */
export function importCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}
