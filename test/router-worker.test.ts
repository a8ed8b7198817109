// The addon is context-aware: it loads and runs in worker_threads (as in piscina pools) alongside the main
// thread, each environment with its own instance, and gives the same numbers everywhere.
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { INITIAL_GATES, paramLayout } from '../src/router/layout.js';
import { NativeRouter, nativeAddonPath, nativeAvailable } from '../src/router/native.js';
import { Rng } from '../src/util/random.js';

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'native router in worker threads' : `native router in worker threads (skipped: ${available.reason})`;

// Plain JS so the worker needs no TS loader; it uses the raw addon API.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const addon = require(workerData.path);
const { hidden, params, x, vol, risk } = workerData;
const r = new addon.Router(hidden, 'auto', 2);
r.setParams(params, 1.1);
const n = vol.length;
const probs = new Float32Array(n * 4), assign = new Uint8Array(n), expert = new Float32Array(n * hidden);
r.forward(x, vol, risk, probs, assign, expert).then(() => {
  parentPort.postMessage({ backend: r.backendName(), probs, assign, expert });
  r.close();
}, (err) => parentPort.postMessage({ error: String(err) }));
`;

interface WorkerResult {
  backend: string;
  probs: Float32Array;
  assign: Uint8Array;
  expert: Float32Array;
  error?: string;
}

function runInWorker(data: Record<string, unknown>): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: data });
    w.once('message', (m: WorkerResult) => {
      void w.terminate();
      if (m.error) reject(new Error(m.error));
      else resolve(m);
    });
    w.once('error', reject);
  });
}

// Starts a large forward and reports it; the test terminates the worker while the batch is still running.
const TERMINATE_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const addon = require(workerData.path);
const r = new addon.Router(32, 'auto', 2);
const n = workerData.n;
const x = new Float32Array(n * 32), vol = new Float32Array(n), risk = new Float32Array(n);
const probs = new Float32Array(n * 4), assign = new Uint8Array(n), expert = new Float32Array(n * 32);
for (let k = 0; k < 4; k++) void r.forward(x, vol, risk, probs, assign, expert);
void r.lossAndGrad(x.subarray(0, 32 * 1000), vol.subarray(0, 1000), risk.subarray(0, 1000), new Uint8Array(1000), null, 0, 0, new Float32Array(r.paramCount()));
parentPort.postMessage('started');
`;

suite(suiteName, () => {
  it('survives a worker terminated while its batches are in flight', async () => {
    for (let round = 0; round < 3; round++) {
      const w = new Worker(TERMINATE_SOURCE, { eval: true, workerData: { path: nativeAddonPath(), n: 400_000 } });
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
      });
      const code = await w.terminate();
      expect(code).toBe(1);
    }
    // The process is still here and the addon still works on this thread.
    const r = new NativeRouter({ hidden: 16 });
    const out = r.forwardSync({ x: new Float32Array(16), vol: new Float32Array(1), risk: new Float32Array(1) });
    expect(out.probs[0]).toBeCloseTo(0.25, 6);
    r.close();
  });

  it('loads in two workers at once and matches the main thread bit for bit', async () => {
    const hidden = 32;
    const rng = new Rng(2024);
    const L = paramLayout(hidden);
    const params = rng.fillNormal(new Float32Array(L.size), 0.3);
    INITIAL_GATES.forEach((g, i) => (params[L.byName.gates.offset + i] = g));
    const n = 5000;
    const x = rng.fillNormal(new Float32Array(n * hidden));
    const vol = rng.fillNormal(new Float32Array(n), 0.5);
    const risk = rng.fillNormal(new Float32Array(n));

    const main = new NativeRouter({ hidden, threads: 2 });
    main.setParams(params, 1.1);
    const data = { path: nativeAddonPath(), hidden, params, x, vol, risk };
    const [a, b, here] = await Promise.all([runInWorker(data), runInWorker(data), main.forward({ x, vol, risk }, { expert: true })]);
    for (const w of [a, b]) {
      expect(w.backend).toBe(main.backend);
      expect(w.probs).toEqual(here.probs);
      expect(w.assign).toEqual(here.assign);
      expect(w.expert).toEqual(here.expert);
    }
    main.close();
  });
});
