import { chmod, mkdir, readFile, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/train.js';
import { loadModel } from '../src/router/model.js';

/** `npm run train --out`: a model that could not be written is refused before training, not after. */

// The smallest training the flags allow: enough to reach the end and write a file in a few seconds.
const TINY = ['--steps', '2', '--batch', '16', '--tickers-per-subtype', '1', '--train-seeds', '1', '--test-seeds', '1', '--days', '300'];
const isRoot = process.getuid?.() === 0;
let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-cli-train-'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

async function train(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((m: unknown) => void out.push(String(m)));
  const error = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void err.push(String(m)));
  const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
  try {
    return { code: await main([...TINY, ...args]), out, err };
  } finally {
    log.mockRestore();
    error.mockRestore();
    warn.mockRestore();
  }
}

describe('train --out', () => {
  it('refuses a path under a file, and a folder, with exit 2 before any training', async () => {
    const plain = path.join(tmp, 'plain');
    await writeFile(plain, 'not a folder');
    const underFile = path.join(plain, 'sub', 'router.safetensors');
    const r = await train(['--out', underFile]);
    expect(r.err.join('\n')).toBe(
      `train: Expected a writable file path for --out but received ${JSON.stringify(underFile)} (cannot create folder ${path.dirname(underFile)}: ENOTDIR)\nRun with --help for usage.`,
    );
    expect(r.code).toBe(2);
    expect(r.out).toEqual([]);

    const dir = await train(['--out', tmp]);
    expect(dir.code).toBe(2);
    expect(dir.err.join('\n')).toContain(`Expected a writable file path for --out but received ${JSON.stringify(tmp)} (a folder)`);
    expect(dir.out).toEqual([]);
  });

  it.skipIf(isRoot)('refuses a folder it may not write in (permission bits bind only non-root users)', async () => {
    const locked = path.join(tmp, 'locked');
    await mkdir(locked);
    await chmod(locked, 0o555);
    try {
      const file = path.join(locked, 'router.safetensors');
      const r = await train(['--out', file]);
      expect(r.code).toBe(2);
      expect(r.err.join('\n')).toContain(`(cannot write in ${locked}: EACCES)`);
      expect(r.out).toEqual([]);
    } finally {
      await chmod(locked, 0o755);
    }
  });

  it('makes a missing folder, leaves no probe behind, and writes the model there after training', async () => {
    const file = path.join(tmp, 'new', 'nested', 'router.safetensors');
    const r = await train(['--out', file]);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out.at(-1)).toBe(`wrote ${file}`);
    expect((await stat(file)).size).toBeGreaterThan(0);
    expect(await readdir(path.dirname(file))).toEqual(['router.safetensors']);
  });
});

describe('train --seeds', () => {
  it('refuses one seed, a repeated seed, a non-integer and --seed beside it, with exit 2 before any training', async () => {
    for (const [args, msg] of [
      [['--seeds', '7'], 'Expected 2 to 8 distinct integer seeds in [0, 2147483647], comma-separated, for --seeds but received "7"'],
      [['--seeds', '7,7'], 'for --seeds but received "7,7"'],
      [['--seeds', '7,x'], 'for --seeds but received "7,x"'],
      [['--seeds', '7,11', '--seed', '3'], 'Expected --seed N or --seeds LIST but received both'],
    ] as const) {
      const r = await train([...args, '--out', path.join(tmp, 'never.safetensors')]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err.join('\n')).toContain(msg);
      expect(r.out).toEqual([]);
    }
  });

  it('trains one member per seed and writes them as one ensemble with its rebuild command', async () => {
    const file = path.join(tmp, 'ensemble.safetensors');
    const r = await train(['--seeds', '3,5', '--context-inception-share', '0.25', '--stand-in-share', '0.5', '--out', file]);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.out.some((l) => /^member 2 \(seed 5\) alone on the first member's held-out simulator histories: per day [\d.]+%, per ticker [\d.]+%$/.test(l))).toBe(true);
    const m = await loadModel(file);
    expect(m.members).toHaveLength(2);
    expect(m.members[0]).not.toEqual(m.members[1]);
    expect(m.metadata.seed).toBe('3,5');
    expect(m.metadata.command).toContain('--seeds 3,5 ');
    expect(JSON.parse(m.metadata.training_config!).seeds).toEqual([3, 5]);
    // The rebuild command and the recipe keep the degraded contexts' listing-order share.
    expect(m.metadata.command).toContain(' --context-inception-share 0.25 ');
    expect(JSON.parse(m.metadata.training_config!).data.contextInceptionShare).toBe(0.25);
    // And the share of them made of stand-ins.
    expect(m.metadata.command).toContain(' --stand-in-share 0.5 ');
    expect(JSON.parse(m.metadata.training_config!).data.standInShare).toBe(0.5);
  });
});

describe('train speed flags', () => {
  it('give the same model bytes: feeder thread or not, one simulation thread or several, fused steps or not', async () => {
    const a = path.join(tmp, 'a.safetensors');
    const b = path.join(tmp, 'b.safetensors');
    // Three histories so that the seeds really spread over the two simulation threads.
    expect((await train(['--train-seeds', '3', '--steps', '6', '--feeder-threads', '3', '--out', a])).code).toBe(0);
    expect((await train(['--train-seeds', '3', '--steps', '6', '--feeder', 'off', '--sim-threads', '1', '--fused-step', 'off', '--steps-per-call', '4', '--device-set', 'off', '--out', b])).code).toBe(0);
    // The files name their own path in the rebuild command; everything else must match.
    const strip = (buf: Buffer, name: string) => buf.toString('latin1').split(name).join('OUT');
    expect(strip(await readFile(a), 'a.safetensors')).toBe(strip(await readFile(b), 'b.safetensors'));
    for (const [args, msg] of [
      [['--feeder', 'maybe'], 'Expected on or off for --feeder but received "maybe"'],
      [['--vol-scale-range', '2,1'], 'Expected LO,HI with 0 < LO ≤ HI ≤ 10 for --vol-scale-range but received "2,1"'],
      [['--vol-scale-share', '2'], 'Expected number in [0, 1] for --vol-scale-share but received "2"'],
      [['--vol-scale-where', 'some'], 'Expected all or whole-context for --vol-scale-where but received "some"'],
      [['--context-inception-share', '-1'], 'Expected number in [0, 1] for --context-inception-share but received "-1"'],
      [['--stand-in-share', '1.5'], 'Expected number in [0, 1] for --stand-in-share but received "1.5"'],
      [['--fused-step', '1'], 'Expected on or off for --fused-step but received "1"'],
      [['--steps-per-call', '0'], '--steps-per-call'],
      [['--device-set', 'yes'], 'Expected on or off for --device-set but received "yes"'],
      [['--router-threads', 'maybe'], 'Expected on or off for --router-threads but received "maybe"'],
      [['--fold-concurrency', '0'], 'Expected integer in 1..64 for --fold-concurrency but received "0"'],
    ] as const) {
      const bad = await train([...args]);
      expect(bad.code, args.join(' ')).toBe(2);
      expect(bad.err.join('\n')).toContain(msg);
    }
  });
});

describe('train --real-data', () => {
  it('refuses --real-* flags without --real-data, a missing folder, and --real-data with --calibrate-data, before any training', async () => {
    const orphan = await train(['--real-repeat', '3']);
    expect(orphan.code).toBe(2);
    expect(orphan.err.join('\n')).toContain('Expected --real-data DIR with --real-repeat but received none');
    const missing = path.join(tmp, 'no-such-folder');
    const gone = await train(['--real-data', missing]);
    expect(gone.code).toBe(2);
    expect(gone.err.join('\n')).toContain(`Expected a folder for --real-data but received ${JSON.stringify(missing)} (not a folder)`);
    const both = await train(['--real-data', tmp, '--calibrate-data', tmp]);
    expect(both.code).toBe(2);
    expect(both.err.join('\n')).toContain('Expected either --real-data or --calibrate-data but received both');
    const folds = await train(['--real-data', tmp, '--real-folds', '1']);
    expect(folds.code).toBe(2);
    expect(folds.err.join('\n')).toContain('--real-folds');
    const dropout = await train(['--real-data', tmp, '--real-context-dropout', '1.5']);
    expect(dropout.code).toBe(2);
    expect(dropout.err.join('\n')).toContain('Expected a share in [0, 1] for --real-context-dropout but received "1.5"');
    for (const r of [orphan, gone, both, folds, dropout]) expect(r.out).toEqual([]);
  });
});

describe('--real-context-dropout', () => {
  it('reaches the real training data only when set above 0', async () => {
    const { parseArgs, realDataFlags, realTrainingData, REAL_DATA_FLAGS } = await import('../src/cli/args.js');
    const dir = path.dirname(fileURLToPath(import.meta.url));
    const parse = (extra: string[]) => realTrainingData(realDataFlags(parseArgs(['--real-data', dir, ...extra], REAL_DATA_FLAGS))!);
    expect(parse(['--real-context-dropout', '0.5']).contextDropout).toBe(0.5);
    expect('contextDropout' in parse(['--real-context-dropout', '0'])).toBe(false);
    expect('contextDropout' in parse([])).toBe(false);
  });
});
