// End-to-end forward from JS Float32Arrays through the addon, on a machine with a GPU (no npm packages needed):
//   node e2e.cjs <moe_router.node> <router16.safetensors> <router32.safetensors> <copy.json> [checkDir]
// Prints JSON lines: the backend the router picked, a CUDA-vs-SIMD check in Node, the CUDA router against the
// PyTorch outputs written by torch_router.py (checkDir), and tokens/s of `await router.forward(...)` for 1e6 and 1e7
// tokens (outputs reused, median of 5 after a warm-up) against the transfer limit from the measured pinned
// bandwidths: inBytes / H2D + outBytes / D2H.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { performance } = require('node:perf_hooks');

const [addonPath, w16, w32, copyJson, checkDir] = process.argv.slice(2);
const addon = require(path.resolve(addonPath));
const copy = JSON.parse(fs.readFileSync(copyJson, 'utf8'));
const emit = (o) => console.log(JSON.stringify(o));
const NAMES = ['W1', 'b1', 'Wc', 'bc', 'Wv', 'Bv', 'Wr', 'Br', 'Ws', 'Bs', 'gates', 'We', 'be'];

function loadWeights(file) {
  const buf = fs.readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  const parts = NAMES.map((n) => {
    const [b, e] = header[n].data_offsets;
    return new Float32Array(buf.buffer.slice(buf.byteOffset + 8 + len + b, buf.byteOffset + 8 + len + e));
  });
  const H = Math.round(Math.sqrt(parts[0].length / 2));
  const w = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) w.set(p, o), (o += p.length);
  return { H, w };
}

let seed = 0x9e3779b9;
function fill(a, scale, offset) {
  for (let i = 0; i < a.length; i++) {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    a[i] = ((seed >>> 0) / 4294967296 - 0.5) * scale + offset;
  }
  return a;
}

async function main() {
  emit({ kind: 'node', version: process.version, cuda: addon.cudaStatus() });
  for (const file of [w16, w32]) {
    const { H, w } = loadWeights(file);
    const gpu = new addon.Router(H, 'auto', 1);
    gpu.setParams(w, 1);
    emit({ kind: 'node-backend', H, info: gpu.backendInfo() });

    // CUDA against SIMD (16 threads) in Node on 100 003 tokens.
    {
      const n = 100003;
      const x = fill(new Float32Array(n * H), 4, 0), vol = fill(new Float32Array(n), 0.05, 0.025), risk = fill(new Float32Array(n), 4, 0);
      const cpu = new addon.Router(H, 'simd', 16);
      cpu.setParams(w, 1);
      const a = { p: new Float32Array(n * 4), s: new Uint8Array(n), e: new Float32Array(n * H) };
      const b = { p: new Float32Array(n * 4), s: new Uint8Array(n), e: new Float32Array(n * H) };
      await gpu.forward(x, vol, risk, a.p, a.s, a.e);
      await cpu.forward(x, vol, risk, b.p, b.s, b.e);
      let maxRel = 0, diff = 0;
      for (let i = 0; i < n * 4; i++) maxRel = Math.max(maxRel, Math.abs(a.p[i] - b.p[i]) / Math.max(b.p[i], 1e-30));
      for (let i = 0; i < n; i++) diff += a.s[i] !== b.s[i] ? 1 : 0;
      emit({ kind: 'node-check', against: cpu.backendName(), H, tokens: n, maxRelProbs: maxRel, argmaxDiffer: diff });
      cpu.close();
    }
    // CUDA against PyTorch on the inputs torch_router.py wrote.
    if (checkDir && fs.existsSync(path.join(checkDir, `torch_check_h${H}.bin`))) {
      const n = 4096;
      const raw = fs.readFileSync(path.join(checkDir, `torch_check_h${H}.bin`));
      let off = 0;
      const take = (len) => { const a = new Float32Array(raw.buffer.slice(raw.byteOffset + off, raw.byteOffset + off + len * 4)); off += len * 4; return a; };
      const x = take(n * H), vol = take(n), risk = take(n), tp = take(n * 4), te = take(n * H);
      const ta = new Uint8Array(raw.buffer.slice(raw.byteOffset + off, raw.byteOffset + off + n));
      const p = new Float32Array(n * 4), s = new Uint8Array(n), e = new Float32Array(n * H);
      await gpu.forward(x, vol, risk, p, s, e);
      let maxRel = 0, diff = 0, maxE = 0;
      for (let i = 0; i < n * 4; i++) maxRel = Math.max(maxRel, Math.abs(p[i] - tp[i]) / Math.max(tp[i], 1e-30));
      for (let i = 0; i < n; i++) {
        if (s[i] !== ta[i]) { diff++; continue; }
        for (let k = 0; k < H; k++) maxE = Math.max(maxE, Math.abs(e[i * H + k] - te[i * H + k]) / (1 + Math.abs(te[i * H + k])));
      }
      emit({ kind: 'node-torch-check', H, tokens: n, maxRelProbs: maxRel, argmaxDiffer: diff, maxExpertErr: maxE });
    }
    // Throughput from JS arrays, transfers included.
    // 'shared': every array over a SharedArrayBuffer, which the addon reads and writes in place (no copies on the JS
    // thread; the CUDA backend stages them through its pinned buffers); 'pinned': every array over the addon's
    // page-locked memory (allocPinned, as pinnedBatch takes it), also in place, moved by DMA alone; 'staged' and
    // 'registered': ordinary arrays, copied by the addon, then staged (or page-locked) by the CUDA backend. The pinned
    // set's inputs are the shared set's, and its outputs must equal the shared run's bit for bit.
    const fresh = (ctor, len, kind) =>
      kind === 'shared' ? new ctor(new SharedArrayBuffer(len * ctor.BYTES_PER_ELEMENT))
      : kind === 'pinned' ? new ctor(addon.allocPinned(len * ctor.BYTES_PER_ELEMENT))
      : new ctor(len);
    for (const n of [1_000_000, 10_000_000]) {
      const sets = {};
      for (const kind of ['shared', 'pinned', 'plain']) {
        const x = fresh(Float32Array, n * H, kind), vol = fresh(Float32Array, n, kind), risk = fresh(Float32Array, n, kind);
        if (kind === 'shared') fill(x, 4, 0), fill(vol, 0.05, 0.025), fill(risk, 4, 0);
        else x.set(sets.shared.x), vol.set(sets.shared.vol), risk.set(sets.shared.risk);
        sets[kind] = { x, vol, risk, p: fresh(Float32Array, n * 4, kind), s: fresh(Uint8Array, n, kind), e: fresh(Float32Array, n * H, kind) };
      }
      for (const [kind, modes] of [['shared', ['shared']], ['pinned', ['pinned']], ['plain', ['staged', 'registered']]])
      for (const mode of modes)
      for (const expert of [true, false]) {
        const { x, vol, risk, p, s, e } = sets[kind];
        process.env.MOE_CUDA_HOST_REGISTER = mode === 'registered' ? '1' : '0';
        const run = () => gpu.forward(x, vol, risk, p, s, expert ? e : null);
        await run();
        const ms = [];
        for (let r = 0; r < 5; r++) {
          const t0 = performance.now();
          await run();
          ms.push(performance.now() - t0);
        }
        ms.sort((a, b) => a - b);
        const med = ms[2];
        const inBytes = n * (H * 4 + 8), outBytes = n * (16 + 1 + (expert ? H * 4 : 0));
        const limitMs = (inBytes / copy.h2dGBs + outBytes / copy.d2hGBs) / 1e6;
        const row = { kind: 'node-e2e', mode, H, tokens: n, expert, ms: med, tokensPerSec: (n / med) * 1e3, transferLimitMs: limitMs,
                      ofTransferLimit: limitMs / med };
        if (mode === 'pinned') {
          const a = sets.shared, b = sets.pinned;
          await gpu.forward(a.x, a.vol, a.risk, a.p, a.s, expert ? a.e : null);
          const same = (u, v) => Buffer.from(u.buffer, u.byteOffset, u.byteLength).equals(Buffer.from(v.buffer, v.byteOffset, v.byteLength));
          row.identicalToShared = same(a.p, b.p) && same(a.s, b.s) && (!expert || same(a.e, b.e));
        }
        emit(row);
      }
    }
    // A NaN in pinned inputs rejects the promise naming the array and the index (found on the device).
    {
      const n = 300_000, x = fresh(Float32Array, n * H, 'pinned'), vol = fresh(Float32Array, n, 'pinned'), risk = fresh(Float32Array, n, 'pinned');
      fill(x, 4, 0), fill(vol, 0.05, 0.025), fill(risk, 4, 0);
      x[n * H - 2] = NaN;
      vol[n - 1] = Infinity;
      let message = null;
      try {
        await gpu.forward(x, vol, risk, fresh(Float32Array, n * 4, 'pinned'), fresh(Uint8Array, n, 'pinned'), null);
      } catch (err) {
        message = err.message;
      }
      emit({ kind: 'node-pinned-nan', H, message, ok: typeof message === "string" && message.endsWith(`Expected finite values for x but received NaN at index ${n * H - 2}`) });
    }
    delete process.env.MOE_CUDA_HOST_REGISTER;
    gpu.close();
  }
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exitCode = 1;
});
