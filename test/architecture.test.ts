import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importGraph, LAYERS, layerOf, layerViolations, importCycles } from './helpers/import-graph.js';

/**
 * The layering of docs/architecture.md, checked on the real import graph (every `import`, `export … from` and
 * dynamic `import()` of src/, jobs/ and workers/, type-only ones included): no module imports a higher layer or a
 * peer of its own layer, and no two modules import each other, directly or round a loop.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(path.join(REPO, dir))) {
    const rel = path.posix.join(dir, e);
    if (statSync(path.join(REPO, rel)).isDirectory()) out.push(...sourceFiles(rel));
    else if (rel.endsWith('.ts')) out.push(rel);
  }
  return out;
}

const files = ['src', 'jobs', 'workers'].flatMap(sourceFiles);
const graph = importGraph(files, (f) => readFileSync(path.join(REPO, f), 'utf8'));

describe('architecture: layers and import loops', () => {
  it('places every module in exactly one layer', () => {
    expect(files.length).toBeGreaterThan(80);
    expect(files.filter((f) => layerOf(f) === undefined)).toEqual([]);
  });

  it('has no import from a module to a higher layer or to a peer of its own layer', () => {
    expect(layerViolations(graph)).toEqual([]);
  });

  it('has no import loop', () => {
    expect(importCycles(graph)).toEqual([]);
  });

  it('catches an upward import and a loop when one is added', () => {
    const bad = new Map(graph);
    bad.set('src/data/types.ts', [...(bad.get('src/data/types.ts') ?? []), 'src/router/layout.ts']);
    bad.set('src/router/layout.ts', [...(bad.get('src/router/layout.ts') ?? []), 'src/data/types.ts']);
    expect(layerViolations(bad)).toContain('src/data/types.ts (data) imports src/router/layout.ts (router)');
    expect(importCycles(bad).some((c) => c.includes('src/data/types.ts') && c.includes('src/router/layout.ts'))).toBe(true);
  });

  it('documents the layers it checks in docs/architecture.md', () => {
    const doc = readFileSync(path.join(REPO, 'docs/architecture.md'), 'utf8');
    for (const layer of LAYERS) expect(doc, `layer ${layer.name}`).toContain(`| ${layer.name} |`);
  });
});
