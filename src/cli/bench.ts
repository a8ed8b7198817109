/**
 * `npm run bench [-- --json] [-- --tokens N]`: throughput benchmarks. Each section is a function returning rows;
 * the table goes to stdout, and with `--json` the last line is one JSON object `{ <section>: rows }`.
 * Router: full forward (probabilities, assignment and activated expert output) in tokens/s for the float64 TS
 * reference, the native scalar kernels and the native SIMD kernels on 1 and 2 threads, H = 16 and 32, and the
 * CUDA backend when a GPU is usable (from JS arrays, transfers included; docs/performance.md has kernel-only rates).
 */
import { performance } from 'node:perf_hooks';
import { INITIAL_GATES, paramLayout, type Hidden } from '../router/layout.js';
import { NativeRouter, cudaStatus, loadNativeAddon, nativeAvailable, sharedBatch, type ForwardOutput, type TokenBatch } from '../router/native.js';
import { referenceForward } from '../router/reference.js';
import { Rng } from '../util/random.js';
import { intFlag, listFlag, parseArgs, UsageError } from './args.js';
import { EXIT, runCommand, runIfMain } from './run.js';

const BENCH_USAGE = 'usage: npm run bench -- [--tokens N] [--impl ts-reference,native-scalar,native-simd,native-cuda] [--json]';

type Impl = RouterBenchRow['impl'];
const IMPLS: readonly Impl[] = ['ts-reference', 'native-scalar', 'native-simd', 'native-cuda'];

interface BenchArgs {
  json: boolean;
  tokens: number;
  /** Implementations to measure (`--impl a,b`). @defaultValue all */
  impls: readonly Impl[];
}

export interface RouterBenchRow {
  impl: 'ts-reference' | 'native-scalar' | 'native-simd' | 'native-cuda';
  hidden: Hidden;
  threads: 1 | 2;
  /** Best of the timed repeats. */
  tokensPerSec: number;
  medianTokensPerSec: number;
  /** Tokens per second of process CPU time (best run): discounts other users of a shared machine; with 2
   * threads it is per core-second, so 2-thread scaling shows in tokensPerSec only. */
  tokensPerCpuSec: number;
  /** Tokens per timed run (the TS reference runs a smaller batch: it is ~100× slower). */
  tokens: number;
  repeats: number;
  /** Kernel family that ran ('cuda', 'simd-avx512', 'simd-avx2', 'scalar', 'float64'). */
  backend: string;
  /** How the batch reached the addon: ordinary typed arrays (copied in and out by the addon), or arrays in
   * SharedArrayBuffers, routed in place (`sharedBatch`). */
  arrays: 'copied' | 'shared';
}

function parseBenchArgs(argv: readonly string[]): BenchArgs | 'help' {
  const args = parseArgs(argv, { json: { type: 'boolean' }, tokens: { type: 'string' }, impl: { type: 'string' }, help: { type: 'boolean' } });
  if (args.flags.has('help')) return 'help';
  if (args.positionals.length > 0) throw new UsageError(`Expected no positional arguments but received ${JSON.stringify(args.positionals[0])}`);
  return {
    json: args.flags.has('json'),
    tokens: intFlag(args, 'tokens', 1_000_000, 1, 50_000_000),
    impls: listFlag(args, 'impl', IMPLS, IMPLS),
  };
}

/** Random weights at a realistic scale (He-like) and the shipped initial gates. */
function benchParams(hidden: Hidden, rng: Rng): Float32Array {
  const L = paramLayout(hidden);
  const p = new Float32Array(L.size);
  for (const t of L.tensors) {
    const fanIn = t.shape.length > 1 ? (t.shape[t.shape.length - 2] as number) : 1;
    const scale = t.decay ? Math.sqrt(2 / fanIn) : 0.1;
    for (let i = 0; i < t.size; i++) p[t.offset + i] = rng.normal() * scale;
  }
  INITIAL_GATES.forEach((g, i) => (p[L.byName.gates.offset + i] = g));
  return p;
}

function benchBatch(hidden: Hidden, n: number, rng: Rng): TokenBatch {
  const x = rng.fillNormal(new Float32Array(n * hidden));
  const vol = new Float32Array(n).map(() => Math.abs(rng.normal()) * 0.02);
  const risk = rng.fillNormal(new Float32Array(n));
  return { x, vol, risk };
}

/** Best and median wall-clock rate and best CPU-time rate over `repeats` runs after one warm-up run. */
async function timeRuns(tokens: number, repeats: number, run: () => Promise<void> | void): Promise<[number, number, number]> {
  await run(); // warm-up: page in outputs, spin up threads, JIT
  const rates: number[] = [];
  let cpuRate = 0;
  for (let r = 0; r < repeats; r++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await run();
    const wall = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    rates.push(tokens / wall);
    cpuRate = Math.max(cpuRate, tokens / ((c.user + c.system) / 1e6));
  }
  rates.sort((a, b) => a - b);
  return [rates[rates.length - 1] as number, rates[Math.floor(rates.length / 2)] as number, cpuRate];
}

export async function benchRouter(tokens: number, impls: readonly Impl[] = IMPLS): Promise<RouterBenchRow[]> {
  const rows: RouterBenchRow[] = [];
  const available = nativeAvailable();
  for (const hidden of [16, 32] as const) {
    const rng = new Rng(20_240 + hidden);
    const params = benchParams(hidden, rng);
    const batch = benchBatch(hidden, tokens, rng);
    const refTokens = Math.min(tokens, 20_000);
    const refBatch: TokenBatch = {
      x: batch.x.subarray(0, refTokens * hidden),
      vol: batch.vol.subarray(0, refTokens),
      risk: batch.risk.subarray(0, refTokens),
    };
    if (impls.includes('ts-reference')) {
      const [best, median, cpu] = await timeRuns(refTokens, 2, () => {
        referenceForward(params, hidden, refBatch, 1);
      });
      rows.push({ impl: 'ts-reference', hidden, threads: 1, tokensPerSec: best, medianTokensPerSec: median, tokensPerCpuSec: cpu, tokens: refTokens, repeats: 2, backend: 'float64', arrays: 'copied' });
    }
    if (!available.ok) continue;
    // One native measurement: forward of the whole batch with the expert output into reused outputs (as a
    // long-lived route worker would: a fresh 128 MB expert array per call costs ~30k page faults, which measures the
    // kernel's memory manager rather than the router), from ordinary arrays or from arrays in SharedArrayBuffers.
    const measure = async (impl: RouterBenchRow['impl'], router: NativeRouter, threads: 1 | 2, arrays: RouterBenchRow['arrays']) => {
      router.setParams(params, 1);
      const repeats = 5;
      let input = batch;
      let out: ForwardOutput = { probs: new Float32Array(tokens * 4), assign: new Uint8Array(tokens), expert: new Float32Array(tokens * hidden) };
      if (arrays === 'shared') {
        const shared = sharedBatch(tokens, hidden, true);
        shared.batch.x.set(batch.x);
        shared.batch.vol.set(batch.vol);
        shared.batch.risk.set(batch.risk);
        input = shared.batch;
        out = shared.out;
      }
      const [b, m, cpu] = await timeRuns(tokens, repeats, async () => {
        await router.forward(input, { expert: true, out });
      });
      rows.push({ impl, hidden, threads, tokensPerSec: b, medianTokensPerSec: m, tokensPerCpuSec: cpu, tokens, repeats, backend: router.backend, arrays });
    };
    for (const impl of ['native-scalar', 'native-simd'] as const) {
      if (!impls.includes(impl)) continue;
      for (const threads of [1, 2] as const) {
        const router = new NativeRouter({ hidden, threads, backend: impl === 'native-simd' ? 'simd' : 'scalar' });
        // In place against copied, side by side, where the copies weigh most: the fastest CPU configuration.
        for (const arrays of impl === 'native-simd' && threads === 2 ? (['copied', 'shared'] as const) : (['copied'] as const)) {
          await measure(impl, router, threads, arrays);
        }
        router.close();
      }
    }
    if (impls.includes('native-cuda') && cudaStatus().available) {
      const router = new NativeRouter({ hidden, backend: 'cuda' });
      for (const arrays of ['copied', 'shared'] as const) await measure('native-cuda', router, 1, arrays);
      router.close();
    }
  }
  return rows;
}

function printRouterTable(rows: RouterBenchRow[]): void {
  const fmt = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : `${(x / 1e3).toFixed(1)} k`);
  console.log('router forward (probs + assign + expert output), tokens/s: best and median wall clock, best per CPU-second');
  console.log('(arrays: copied = ordinary typed arrays, copied in and out by the addon; shared = in SharedArrayBuffers, routed in place)');
  console.log('impl           H   thr  backend       arrays        best      median     per-CPU-s   × ts-ref  × copied');
  for (const r of rows) {
    const ref = rows.find((q) => q.impl === 'ts-reference' && q.hidden === r.hidden);
    const ratio = ref ? (r.tokensPerSec / ref.tokensPerSec).toFixed(1) : '-';
    const copied = r.arrays === 'shared' ? rows.find((q) => q.impl === r.impl && q.hidden === r.hidden && q.threads === r.threads && q.arrays === 'copied') : undefined;
    const vsCopied = copied ? (r.tokensPerSec / copied.tokensPerSec).toFixed(2) : '-';
    console.log(
      `${r.impl.padEnd(14)} ${String(r.hidden).padStart(2)}  ${String(r.threads).padStart(3)}  ${r.backend.padEnd(13)} ${r.arrays.padEnd(7)} ${fmt(r.tokensPerSec).padStart(10)}  ${fmt(r.medianTokensPerSec).padStart(10)}  ${fmt(r.tokensPerCpuSec).padStart(10)}  ${ratio.padStart(8)}  ${vsCopied.padStart(8)}`,
    );
  }
}

export function main(argv: readonly string[]): Promise<number> {
  return runCommand('bench', () => bench(argv));
}

async function bench(argv: readonly string[]): Promise<number> {
  const args = parseBenchArgs(argv);
  if (args === 'help') {
    console.log(BENCH_USAGE);
    return EXIT.ok;
  }
  const available = nativeAvailable();
  if (available.ok) {
    const level = loadNativeAddon().simdLevel();
    const gpu = cudaStatus();
    console.log(`native addon: SIMD level ${level === '' ? 'none (scalar only)' : level}; CUDA ${gpu.available ? `on ${gpu.device ?? '?'}` : `not used (${gpu.reason ?? 'unknown'})`}`);
  } else {
    console.log(`native addon unavailable: ${available.reason}; only the TS reference is measured`);
  }
  const router = await benchRouter(args.tokens, args.impls);
  printRouterTable(router);
  if (args.json) console.log(JSON.stringify({ router }));
  return EXIT.ok;
}

await runIfMain(import.meta.url, main);
