// Child process of test/router-detach.test.ts (run under --expose-gc): starts one async router call, detaches
// one of its arrays while the call runs (structuredClone with `transfer`, as postMessage to a worker does),
// collects garbage so the transferred memory is freed, and prints how the call settled as one JSON line.
// Arguments: <via: addon|router> <call: forward|loss> <victim: x|vol|risk|probs|assign|expert|labels|sampleWeight|grad>.
// A crash (SIGSEGV reading or writing freed memory) shows as the child's signal instead of the JSON line.
import { randomBatch, randomParams } from './router.js';
import { NativeRouter, loadNativeAddon } from '../../src/router/native.js';
import { Rng } from '../../src/util/random.js';

const [via, call, victim] = process.argv.slice(2) as [string, string, string];
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with --expose-gc');

const H = 16;
// 100k tokens: x is 6.4 MB, above glibc's mmap threshold, so its freed memory is unmapped and a stale pointer
// faults at once; the scalar backend takes ~80 ms over them, a wide window for the detach and the GC.
const n = 100_000;
const rng = new Rng(41);
const params = randomParams(H, rng);
const batch = randomBatch(H, n, rng);
const labels = new Uint8Array(n).map(() => rng.int(4));
const sampleWeight = new Float32Array(n).fill(1);
// Outputs start at a sentinel, so a rejected call can be checked to have written nothing.
const SENTINEL = 7;
const out = { probs: new Float32Array(n * 4).fill(SENTINEL), assign: new Uint8Array(n).fill(SENTINEL), expert: new Float32Array(n * H).fill(SENTINEL) };
const grad = new Float32Array(params.length).fill(SENTINEL);
const copy = { x: batch.x.slice(), vol: batch.vol.slice(), risk: batch.risk.slice(), labels: labels.slice(), sampleWeight: sampleWeight.slice() };
const arrays: Record<string, ArrayBufferView> = { ...batch, ...out, labels, sampleWeight, grad };

/** Detaches `name`'s buffer and returns how many bytes it had. */
function detach(name: string): number {
  const a = arrays[name];
  if (!a) throw new Error(`unknown victim ${name}`);
  const bytes = a.buffer.byteLength;
  structuredClone(a.buffer, { transfer: [a.buffer as ArrayBuffer] });
  if (a.buffer.byteLength !== 0) throw new Error(`${name} was not detached`);
  return bytes;
}

function collect(victimBytes: number): void {
  for (let i = 0; i < 4; i++) gc!();
  // Allocate over the freed memory, so a stale read sees garbage (0xff: label 255, NaN floats) even where the
  // allocator kept the pages mapped (a 100 kB labels array is below glibc's mmap threshold) and cannot fault.
  const junk: Uint8Array[] = [];
  for (let i = 0; i < 8; i++) junk.push(new Uint8Array(victimBytes).fill(0xff), new Uint8Array(8 << 20).fill(0xff));
}

const bytes = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
// Bit for bit: the same backend on the same inputs is deterministic.
const equal = (a: ArrayBufferView, b: ArrayBufferView): boolean => bytes(a).equals(bytes(b));
const untouched = (): boolean =>
  Object.entries({ ...out, grad }).every(([name, a]) => name === victim || (a as Float32Array | Uint8Array).every((v) => v === SENTINEL));

async function main(): Promise<Record<string, unknown>> {
  if (via === 'router') {
    const r = new NativeRouter({ hidden: H, backend: 'scalar' });
    r.setParams(params, 0.9);
    const work = call === 'forward' ? r.forward(batch, { expert: true, out }) : r.lossAndGrad(batch, labels, { sampleWeight, reconWeight: 0.5 });
    collect(detach(victim));
    try {
      const got = await work;
      const refBatch = { x: copy.x, vol: copy.vol, risk: copy.risk };
      const same =
        call === 'forward'
          ? (() => {
              const want = r.forwardSync(refBatch, { expert: true });
              const g = got as typeof want;
              return equal(g.probs, want.probs) && equal(g.assign, want.assign) && equal(g.expert!, want.expert!);
            })()
          : await (async () => {
              const want = await r.lossAndGrad(refBatch, copy.labels, { sampleWeight: copy.sampleWeight, reconWeight: 0.5 });
              const g = got as typeof want;
              return g.loss === want.loss && equal(g.grad, want.grad);
            })();
      return { settled: 'resolved', same };
    } catch (err) {
      return { settled: 'rejected', name: (err as Error).name, message: (err as Error).message, untouched: untouched() };
    } finally {
      r.close();
    }
  }
  const addon = loadNativeAddon();
  const raw = new addon.Router(H, 'scalar', 1);
  raw.setParams(params, 0.9);
  const work =
    call === 'forward'
      ? raw.forward(batch.x, batch.vol, batch.risk, out.probs, out.assign, out.expert)
      : raw.lossAndGrad(batch.x, batch.vol, batch.risk, labels, sampleWeight, 0.1, 0.5, grad);
  collect(detach(victim));
  try {
    const got = await work;
    let same: boolean;
    if (call === 'forward') {
      const want = { probs: new Float32Array(n * 4), assign: new Uint8Array(n), expert: new Float32Array(n * H) };
      raw.forwardSync(copy.x, copy.vol, copy.risk, want.probs, want.assign, want.expert);
      same = equal(out.probs, want.probs) && equal(out.assign, want.assign) && equal(out.expert, want.expert);
    } else {
      const wantGrad = new Float32Array(params.length);
      const want = await raw.lossAndGrad(copy.x, copy.vol, copy.risk, copy.labels, copy.sampleWeight, 0.1, 0.5, wantGrad);
      same = (got as { loss: number }).loss === want.loss && equal(grad, wantGrad);
    }
    return { settled: 'resolved', same };
  } catch (err) {
    return { settled: 'rejected', name: (err as Error).name, message: (err as Error).message, untouched: untouched() };
  } finally {
    raw.close();
  }
}

process.stdout.write(`${JSON.stringify(await main())}\n`);
