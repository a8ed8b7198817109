// Feature tokens for the tensor-core accuracy check (scripts/device/tensor-check.sh): the simulator's held-out
// histories 20007 and 20008 (tickersPerSubtype instruments of every sub-type, 1000 days, half of them with a degraded
// market context, as in training), through the same feature function as the pipeline, H = 16. Writes uint64 n, then
// float32 x[n·16], vol[n], risk[n] (little-endian), the layout moe_cuda_bench reads from MOE_BENCH_TOKENS16.
//   npx tsx scripts/device/feature-tokens.ts OUT [tickersPerSubtype, default 8: ~295k tokens, 21 MB]
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

import { computeFeatures } from '../../src/data/features/compute.js';
import { trainingSet } from '../../src/data/sim/simulator.js';

const out = process.argv[2];
if (!out) throw new Error('usage: feature-tokens.ts OUT [tickersPerSubtype]');
const per = Number(process.argv[3] ?? 8);
const xs: Float32Array[] = [];
const vols: Float32Array[] = [];
const risks: Float32Array[] = [];
let n = 0;
for (const seed of [20007, 20008]) {
  for (const inst of trainingSet({ seed, tickersPerSubtype: per, days: 1000, contextDropout: 0.5 })) {
    const f = computeFeatures(inst.ticker, inst.bars, 16, inst.context);
    xs.push(f.x);
    vols.push(f.vol);
    risks.push(f.risk);
    n += f.vol.length;
  }
}
const buf = Buffer.alloc(8 + n * 18 * 4);
buf.writeBigUInt64LE(BigInt(n), 0);
let o = 8;
for (const list of [xs, vols, risks]) {
  for (const v of list) {
    Buffer.from(v.buffer, v.byteOffset, v.byteLength).copy(buf, o);
    o += v.byteLength;
  }
}
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, buf);
console.log(`${n} tokens → ${out}`);
