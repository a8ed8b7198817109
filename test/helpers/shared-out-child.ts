// Child process of test/router-detach.test.ts: an async forward from plain (ArrayBuffer) inputs into outputs over a
// SharedArrayBuffer, then the same into fresh outputs; prints one JSON line: whether both settled and agree. Before the
// addon read a shared output's memory as such, this call threw inside the addon's completion and ended the process.
import { randomBatch, randomParams } from './router.js';
import { NativeRouter } from '../../src/router/native.js';
import { Rng } from '../../src/util/random.js';

const H = 16;
const n = 5_000;
const rng = new Rng(43);
const router = new NativeRouter({ hidden: H, backend: 'scalar' });
router.setParams(randomParams(H, rng), 0.9);
const batch = randomBatch(H, n, rng);
const shared = { probs: new Float32Array(new SharedArrayBuffer(n * 16)), assign: new Uint8Array(new SharedArrayBuffer(n)), expert: new Float32Array(new SharedArrayBuffer(n * H * 4)) };
const got = await router.forward(batch, { out: shared, expert: true });
const fresh = await router.forward(batch, { expert: true });
const same = (a: ArrayBufferView, b: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
router.close();
console.log(JSON.stringify({ returned: got.probs === shared.probs, same: same(shared.probs, fresh.probs) && same(shared.assign, fresh.assign) && same(shared.expert, fresh.expert!), written: shared.assign.some((a) => a !== 0) || shared.probs.some((p) => p !== 0) }));
