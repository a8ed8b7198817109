/**
 * GPU check of `trainStepsOnSet` (batches gathered on the device from a set held there by `setTrainingSet`) against
 * `trainSteps` on the same batches gathered on the host: the same losses, gradient norms and parameters, bit for bit,
 * over 60 calls of 16 steps × 4,096 tokens at H = 32 from a set of 500,000 tokens; each way's JS-thread time per call
 * and wall time per call; the errors the addon gives (an index past the set, a NaN in the set, no set held), none
 * changing the parameters. Needs the CUDA backend (exits 3 without).
 *
 * Build machine: npx esbuild scripts/device/train-on-set.ts --bundle --platform=node --format=esm --target=node20 \
 *   --outfile=DIR/train-on-set.mjs
 * GPU host: MOE_NATIVE_PATH=…/moe_router.node node DIR/train-on-set.mjs
 * (the shipped command both ways: scripts/device/recipe-time.sh, runs with and without `--device-set off`).
 */
import { NativeRouter } from '../../src/router/native.js';
import { initParams } from '../../src/router/model.js';
import { Rng } from '../../src/util/random.js';

const H = 32;
const B = 4096;
const STEPS = 16;
const S = 500_000;
const CALLS = 60;
const CW = [0.8, 1.1, 1.6, 0.9];

const rng = new Rng(11);
const set = {
  x: new Float32Array(S * H).map(() => rng.normal()),
  vol: new Float32Array(S).map(() => 0.005 + 0.02 * rng.next()),
  risk: new Float32Array(S).map(() => 0.05 + 0.3 * rng.next()),
  labels: new Uint8Array(S).map(() => rng.int(4)),
};
const indices = Array.from({ length: CALLS }, () => new Uint32Array(B * STEPS).map(() => rng.int(S)));
const opts = { labelSmoothing: 0.05, reconWeight: 0.1, focalGamma: 1 };
const adam = { lr: Array.from({ length: STEPS }, (_, k) => 1e-3 * (1 - k / 32)), weightDecay: 0.01, clipNorm: 1 };

function router(): NativeRouter {
  try {
    const r = new NativeRouter({ hidden: H, backend: 'cuda' });
    r.setParams(initParams(H, 7), 1);
    return r;
  } catch (e) {
    console.log(`no CUDA here: ${(e as Error).message}`);
    process.exit(3);
  }
}

/** The host's batch of `index` as the feeder gathers it. */
function gather(index: Uint32Array) {
  const n = index.length;
  const b = { x: new Float32Array(n * H), vol: new Float32Array(n), risk: new Float32Array(n), labels: new Uint8Array(n), sampleWeight: new Float32Array(n) };
  index.forEach((t, i) => {
    b.x.set(set.x.subarray(t * H, (t + 1) * H), i * H);
    b.vol[i] = set.vol[t]!;
    b.risk[i] = set.risk[t]!;
    b.labels[i] = set.labels[t]!;
    b.sampleWeight[i] = CW[set.labels[t]!]!;
  });
  return b;
}

async function run(onSet: boolean) {
  const r = router();
  const losses: number[] = [];
  let jsMs = 0;
  const batches = onSet ? [] : indices.map(gather);
  const t0 = performance.now();
  if (onSet) r.setTrainingSet(set, CW);
  const setMs = performance.now() - t0;
  const t1 = performance.now();
  for (let c = 0; c < CALLS; c++) {
    const t = performance.now();
    const b = batches[c];
    const p = b === undefined ? r.trainStepsOnSet(indices[c]!, opts, adam, STEPS) : r.trainSteps(b, b.labels, { ...opts, sampleWeight: b.sampleWeight }, adam, STEPS);
    jsMs += performance.now() - t;
    const out = await p;
    losses.push(...out.loss, ...out.gradNorm);
  }
  const wallMs = (performance.now() - t1) / CALLS;
  const params = r.getParams();
  const errors: string[] = [];
  if (onSet) {
    const bad = indices[0]!.slice();
    bad[99] = S;
    errors.push(await r.trainStepsOnSet(bad, opts, adam, STEPS).then(() => 'resolved (wrong)', (e: Error) => e.message));
    const nan = { ...set, risk: set.risk.slice() };
    nan.risk[4321] = Number.NaN;
    try {
      r.setTrainingSet(nan, CW);
      errors.push('NaN set accepted (wrong)');
    } catch (e) {
      errors.push((e as Error).message);
    }
    const fresh = router();
    errors.push(await fresh.trainStepsOnSet(indices[0]!, opts, adam, STEPS).then(() => 'resolved (wrong)', (e: Error) => e.message));
    fresh.close();
    const after = r.getParams();
    errors.push(after.every((v, i) => Object.is(v, params[i])) ? 'parameters unchanged by the failed calls' : 'PARAMETERS CHANGED');
  }
  r.close();
  return { losses, params, jsMs: jsMs / CALLS, wallMs, setMs, errors };
}

const host = await run(false);
const onSet = await run(true);
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => Object.is(v, b[i]));
console.log(`${CALLS} calls of ${STEPS} steps × ${B} tokens, H = ${H}, a set of ${S} tokens`);
console.log(`host batches: JS thread ${host.jsMs.toFixed(2)} ms a call, wall ${host.wallMs.toFixed(2)} ms a call (${(host.wallMs / STEPS).toFixed(3)} ms a step)`);
console.log(`on the set:   JS thread ${onSet.jsMs.toFixed(2)} ms a call, wall ${onSet.wallMs.toFixed(2)} ms a call (${(onSet.wallMs / STEPS).toFixed(3)} ms a step); setTrainingSet ${onSet.setMs.toFixed(0)} ms`);
console.log(`losses and norms equal: ${same(host.losses, onSet.losses)}; parameters equal: ${same(host.params, onSet.params)}`);
for (const e of onSet.errors) console.log(`error check: ${e}`);
