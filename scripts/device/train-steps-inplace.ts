/**
 * GPU check of `trainSteps` reading its batch in place (MOE_TRAINSTEPS_IN_PLACE=1: x, vol, risk and sampleWeight
 * over SharedArrayBuffers, as the trainer's feeder slots are) against the same batch in ordinary arrays (copied at
 * the call): the same losses, gradient norms and parameters, bit for bit; a NaN in a shared input rejects the promise
 * naming the array and the index and changes no parameter; the JS thread's time per call both ways. Needs the CUDA
 * backend (exits 3 without).
 *
 * Build machine: npx esbuild scripts/device/train-steps-inplace.ts --bundle --platform=node --format=esm \
 *   --target=node20 --outfile=DIR/train-steps-inplace.mjs
 * GPU host: MOE_NATIVE_PATH=…/moe_router.node node DIR/train-steps-inplace.mjs (it sets MOE_TRAINSTEPS_IN_PLACE=1 for
 * the in-place run)
 * (and the shipped command with and without the variable: scripts/device/recipe-time.sh, runs NAME@BUNDLE).
 */
import { NativeRouter } from '../../src/router/native.js';
import { initParams } from '../../src/router/model.js';
import { Rng } from '../../src/util/random.js';

const H = 32;
const B = 4096;
const STEPS = 16;
const n = B * STEPS;

function batchIn(shared: boolean, seed: number) {
  const f32 = (len: number) => new Float32Array(shared ? new SharedArrayBuffer(len * 4) : new ArrayBuffer(len * 4));
  const rng = new Rng(seed);
  const x = f32(n * H).map(() => rng.normal());
  const vol = f32(n).map(() => 0.005 + 0.02 * rng.next());
  const risk = f32(n).map(() => 0.05 + 0.3 * rng.next());
  const sampleWeight = f32(n).map(() => 0.5 + rng.next());
  const labels = new Uint8Array(n).map(() => rng.int(4));
  return { x, vol, risk, sampleWeight, labels };
}

async function run(shared: boolean, calls: number) {
  let r: NativeRouter;
  try {
    r = new NativeRouter({ hidden: H, backend: 'cuda' });
  } catch (e) {
    console.log(`no CUDA trainSteps here: ${(e as Error).message}`);
    process.exit(3);
  }
  r.setParams(initParams(H, 7), 1);
  const b = batchIn(shared, 11);
  const adam = { lr: 1e-3, weightDecay: 0.01, clipNorm: 1 };
  const losses: number[] = [];
  let jsMs = 0;
  for (let c = 0; c < calls; c++) {
    const t = performance.now();
    const p = r.trainSteps({ x: b.x, vol: b.vol, risk: b.risk }, b.labels, { labelSmoothing: 0.05, reconWeight: 0.1, sampleWeight: b.sampleWeight }, adam, STEPS);
    jsMs += performance.now() - t;
    const out = await p;
    losses.push(...out.loss, ...out.gradNorm);
  }
  const params = r.getParams();
  // A NaN in a shared input: the promise rejects, the parameters stay.
  let nan = 'not tried';
  if (shared) {
    b.vol[12345] = Number.NaN;
    nan = await r
      .trainSteps({ x: b.x, vol: b.vol, risk: b.risk }, b.labels, { sampleWeight: b.sampleWeight }, adam, STEPS)
      .then(() => 'resolved (wrong)', (e: Error) => e.message);
    const after = r.getParams();
    nan += after.every((v, i) => Object.is(v, params[i])) ? ' | parameters unchanged' : ' | PARAMETERS CHANGED';
  }
  r.close();
  return { losses, params, jsMs: jsMs / calls, nan };
}

const calls = 60;
const copied = await run(false, calls);
process.env.MOE_TRAINSTEPS_IN_PLACE = '1'; // read by the addon at each call (ordinary arrays are copied regardless)
const inPlace = await run(true, calls);
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => Object.is(v, b[i]));
console.log(`${calls} calls of ${STEPS} steps × ${B} tokens, H = ${H}`);
console.log(`JS thread per call: copied ${copied.jsMs.toFixed(2)} ms, in place ${inPlace.jsMs.toFixed(2)} ms`);
console.log(`losses and norms equal: ${same(copied.losses, inPlace.losses)}; parameters equal: ${same(copied.params, inPlace.params)}`);
console.log(`NaN in shared vol: ${inPlace.nan}`);
