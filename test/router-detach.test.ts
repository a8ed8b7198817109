// An ArrayBuffer detached (transferred) while an async router call runs, then a GC: the call must settle cleanly —
// with the right numbers when an input was detached (the addon works on its own copy), with a clear Error and
// nothing written when an output was — never take the process down. Each case runs in a child process
// (test/helpers/detach-child.ts under --expose-gc) so that a SIGSEGV fails that case instead of killing vitest.
// Before the addon staged its buffers every case below failed, twice in a row: SIGSEGV (or SIGABRT) where the freed
// memory was unmapped, wrong numbers read from reused memory where it was not (vol, risk, labels, sampleWeight).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { nativeAvailable } from '../src/router/native.js';

const available = nativeAvailable();
const suite = available.ok ? describe : describe.skip;
const suiteName = available.ok ? 'router: arrays detached during an async call' : `router: arrays detached during an async call (skipped: ${available.reason})`;

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'detach-child.ts');

interface Outcome {
  settled: 'resolved' | 'rejected';
  same?: boolean;
  name?: string;
  message?: string;
  untouched?: boolean;
}

function runChild(via: string, call: string, victim: string): Outcome {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', CHILD, via, call, victim], {
    encoding: 'utf8',
    env: process.env,
    timeout: 60_000,
  });
  const label = `${via} ${call} with ${victim} detached`;
  // A crash reads as signal SIGSEGV (or SIGABRT from a heap check) with no JSON line.
  expect({ signal: r.signal, status: r.status, stderr: r.stderr.slice(-2000) }, label).toEqual({ signal: null, status: 0, stderr: '' });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as Outcome;
}

const callName = { forward: 'forward', loss: 'lossAndGrad' } as const;
const cases: [via: 'addon' | 'router', call: 'forward' | 'loss', victim: string, kind: 'input' | 'output'][] = [
  ['addon', 'forward', 'x', 'input'],
  ['addon', 'forward', 'vol', 'input'],
  ['addon', 'forward', 'risk', 'input'],
  ['addon', 'forward', 'probs', 'output'],
  ['addon', 'forward', 'assign', 'output'],
  ['addon', 'forward', 'expert', 'output'],
  ['addon', 'loss', 'x', 'input'],
  ['addon', 'loss', 'labels', 'input'],
  ['addon', 'loss', 'sampleWeight', 'input'],
  ['addon', 'loss', 'grad', 'output'],
  ['router', 'forward', 'x', 'input'],
  ['router', 'forward', 'probs', 'output'],
  ['router', 'loss', 'x', 'input'],
];

suite(suiteName, () => {
  for (const [via, call, victim, kind] of cases) {
    const what = via === 'router' ? `NativeRouter.${callName[call]}` : `addon ${callName[call]}`;
    if (kind === 'input') {
      it(`${what}: input ${victim} detached mid-call → same results as on a copy`, () => {
        expect(runChild(via, call, victim)).toEqual({ settled: 'resolved', same: true });
      });
    } else {
      it(`${what}: output ${victim} detached mid-call → Error, other outputs untouched`, () => {
        expect(runChild(via, call, victim)).toEqual({
          settled: 'rejected',
          name: 'Error',
          message: `output buffer ${victim} was detached during ${callName[call]}; its results were dropped`,
          untouched: true,
        });
      });
    }
  }

  it('forward from plain inputs into outputs over a SharedArrayBuffer → written, as into fresh outputs', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(path.dirname(CHILD), 'shared-out-child.ts')], { encoding: 'utf8', env: process.env, timeout: 60_000 });
    expect({ signal: r.signal, status: r.status, stderr: r.stderr.slice(-2000) }).toEqual({ signal: null, status: 0, stderr: '' });
    expect(JSON.parse(r.stdout.trim().split('\n').pop() ?? '')).toEqual({ returned: true, same: true, written: true });
  });
});
