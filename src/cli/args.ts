import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs as nodeParseArgs } from 'node:util';
import { isSupportedHidden, type Hidden } from '../data/types.js';
import type { RealTrainingData } from '../training/real-tokens.js';

/**
 * The argument parsing every CLI shares: declared flags only, so a typo is a usage error rather than a silent no-op.
 */

export class UsageError extends Error {
  readonly code = 'USAGE';
  constructor(message: string) {
    super(message);
    this.name = this.constructor.name;
  }
}

export interface FlagSpec {
  /** `string` flags take a value (`--days 60` or `--days=60`); `boolean` flags take none. */
  type: 'string' | 'boolean';
}

export interface ParsedArgs {
  /** Values of the flags given, by flag name (without dashes). Booleans are `true` when present. */
  flags: Map<string, string | true>;
  positionals: string[];
}

/**
 * Parses `argv` (no node/script entries) with Node's own `util.parseArgs` tokenizer, then holds the tokens to the
 * declared flags: an unknown flag, a short flag, a value missing or given to a boolean flag is a UsageError naming
 * the argument as typed. `--` ends the flags.
 */
export function parseArgs(argv: readonly string[], spec: Record<string, FlagSpec>): ParsedArgs {
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  const options = Object.fromEntries(Object.entries(spec).map(([name, s]) => [name, { type: s.type }]));
  const { tokens } = nodeParseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  for (const t of tokens) {
    if (t.kind === 'positional') positionals.push(t.value);
    if (t.kind !== 'option') continue;
    const raw = argv[t.index]!;
    if (!t.rawName.startsWith('--')) throw new UsageError(`Expected a known flag but received ${JSON.stringify(raw)}`);
    const s = spec[t.name];
    if (s === undefined) {
      throw new UsageError(`Expected one of ${Object.keys(spec).map((k) => `--${k}`).join(', ')} but received ${JSON.stringify(raw)}`);
    }
    if (s.type === 'boolean') {
      if (t.inlineValue) throw new UsageError(`Expected no value for --${t.name} but received ${JSON.stringify(t.value ?? '')}`);
      flags.set(t.name, true);
      continue;
    }
    // Without strict mode the tokenizer takes the next argument as the value even when it is a flag: refuse that.
    if (t.value === undefined || (!t.inlineValue && t.value.startsWith('--'))) {
      throw new UsageError(`Expected a value for --${t.name} but received nothing`);
    }
    flags.set(t.name, t.value);
  }
  return { flags, positionals };
}

/** String flag value, or undefined when absent. */
export function stringFlag(args: ParsedArgs, name: string): string | undefined {
  const v = args.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

/** `--NAME on|off` as a boolean (absent: on); any other value is a UsageError naming the flag and the value. */
export function onOffFlag(args: ParsedArgs, name: string): boolean {
  const v = stringFlag(args, name) ?? 'on';
  if (v !== 'on' && v !== 'off') throw new UsageError(`Expected on or off for --${name} but received ${JSON.stringify(v)}`);
  return v === 'on';
}

/** The flags trainingSetFlags reads, for parseArgs. */
export const TRAINING_SET_FLAGS: Record<string, FlagSpec> = {
  'vol-scale-share': { type: 'string' },
  'vol-scale-range': { type: 'string' },
  'vol-scale-where': { type: 'string' },
  'context-inception-share': { type: 'string' },
  'stand-in-share': { type: 'string' },
};

/**
 * The training set's volatility scaling (`--vol-scale-share P`, `--vol-scale-range LO,HI`, `--vol-scale-where
 * all|whole-context`) into `data`: the share of training market histories made calmer or wilder as a whole, the range
 * of that factor, and whether only the instruments with their whole context are scaled (trainingSet); and
 * `--context-inception-share P`, the share of degraded contexts drawn in the reference funds' listing order; and
 * `--stand-in-share P`, the share of degraded contexts replaced by stand-ins of the history's own instruments.
 */
export function trainingSetFlags(
  args: ParsedArgs,
  data: { volScaleShare?: number; volScaleRange?: [number, number]; volScaleWholeContextOnly?: boolean; contextInceptionShare?: number; standInShare?: number },
): void {
  const standIn = numberFlag(stringFlag(args, 'stand-in-share'), 'stand-in-share', data.standInShare ?? 0, 0, 1);
  if (standIn > 0) data.standInShare = standIn;
  else delete data.standInShare;
  const inception = numberFlag(stringFlag(args, 'context-inception-share'), 'context-inception-share', data.contextInceptionShare ?? 0, 0, 1);
  if (inception > 0) data.contextInceptionShare = inception;
  else delete data.contextInceptionShare;
  data.volScaleShare = numberFlag(stringFlag(args, 'vol-scale-share'), 'vol-scale-share', data.volScaleShare ?? 0, 0, 1);
  const where = stringFlag(args, 'vol-scale-where');
  if (where !== undefined && where !== 'all' && where !== 'whole-context') {
    throw new UsageError(`Expected all or whole-context for --vol-scale-where but received ${JSON.stringify(where)}`);
  }
  if (where === 'whole-context') data.volScaleWholeContextOnly = true;
  else if (where === 'all') delete data.volScaleWholeContextOnly;
  const raw = stringFlag(args, 'vol-scale-range');
  if (raw === undefined) return;
  const parts = raw.split(',').map((p) => Number(p));
  if (parts.length !== 2 || !parts.every((p) => Number.isFinite(p)) || !(parts[0]! > 0 && parts[1]! >= parts[0]! && parts[1]! <= 10)) {
    throw new UsageError(`Expected LO,HI with 0 < LO ≤ HI ≤ 10 for --vol-scale-range but received ${JSON.stringify(raw)}`);
  }
  data.volScaleRange = [parts[0]!, parts[1]!];
}

/** Number in [min, max] from a flag's raw value (`stringFlag`); `fallback` when absent. */
export function numberFlag(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max) {
    throw new UsageError(`Expected number in [${min}, ${max}] for --${name} but received ${JSON.stringify(raw)}`);
  }
  return v;
}

/** Integer flag in [min, max]; `fallback` when absent. */
export function intFlag(args: ParsedArgs, name: string, fallback: number, min: number, max: number): number {
  const raw = stringFlag(args, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^-?\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`Expected integer in ${min}..${max} for --${name} but received ${JSON.stringify(raw)}`);
  }
  return n;
}

/** The router's embedding size from `--hidden` (16 or 32); 16 when absent. */
export function hiddenFlag(args: ParsedArgs): Hidden {
  const hidden = intFlag(args, 'hidden', 16, 16, 32);
  if (!isSupportedHidden(hidden)) throw new UsageError(`Expected 16 or 32 for --hidden but received ${hidden}`);
  return hidden;
}

/** Most members of an ensemble trained by one command (a model file holds up to MAX_MEMBERS). */
const MAX_SEEDS = 8;

/**
 * `--seeds A,B,…`: one router per seed, averaged as an ensemble (src/training/ensemble.ts); undefined when absent.
 * 2 to 8 distinct seeds, and not together with `--seed`.
 */
export function seedsFlag(args: ParsedArgs): number[] | undefined {
  const raw = stringFlag(args, 'seeds');
  if (raw === undefined) return undefined;
  const seeds = raw.split(',').map((p) => (/^\d{1,10}$/.test(p.trim()) ? Number(p.trim()) : Number.NaN));
  if (seeds.length < 2 || seeds.length > MAX_SEEDS || seeds.some((v) => !Number.isSafeInteger(v) || v > 2 ** 31 - 1) || new Set(seeds).size !== seeds.length) {
    throw new UsageError(`Expected 2 to ${MAX_SEEDS} distinct integer seeds in [0, 2147483647], comma-separated, for --seeds but received ${JSON.stringify(raw)}`);
  }
  if (args.flags.has('seed')) throw new UsageError('Expected --seed N or --seeds LIST but received both');
  return seeds;
}

/** Comma-separated list flag whose items must be in `allowed`; `fallback` when absent. */
export function listFlag<T extends string>(args: ParsedArgs, name: string, allowed: readonly T[], fallback: readonly T[]): T[] {
  const raw = stringFlag(args, name);
  if (raw === undefined) return [...fallback];
  const items = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new UsageError(`Expected a comma-separated list of ${allowed.join(', ')} for --${name} but received ${JSON.stringify(raw)}`);
  for (const it of items) {
    if (!(allowed as readonly string[]).includes(it)) {
      throw new UsageError(`Expected one of ${allowed.join(', ')} for --${name} but received ${JSON.stringify(it)}`);
    }
  }
  return [...new Set(items)] as T[];
}

/**
 * Makes sure a file can be written at `raw` before any long work that ends by writing it: the path is not a folder,
 * its folder exists (made now if missing, as writing will need) and a probe file can be created there, which is what
 * an atomic write (temporary file, then rename) does. Probing beats checking permission bits, which say nothing for
 * root, a read-only file system or a path through a file. Returns the absolute path; throws UsageError naming `--flag`.
 */
export function writableFilePath(raw: string, flag: string): string {
  const file = path.resolve(raw);
  const dir = path.dirname(file);
  const fail = (why: string): never => {
    throw new UsageError(`Expected a writable file path for --${flag} but received ${JSON.stringify(raw)} (${why})`);
  };
  const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? String(err);
  let isDir = false;
  try {
    isDir = statSync(file).isDirectory();
  } catch (err) {
    // Missing, or a path through a file: making its folder says which.
    if (code(err) !== 'ENOENT' && code(err) !== 'ENOTDIR') fail(code(err));
  }
  if (isDir) fail('a folder');
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    fail(`cannot create folder ${dir}: ${code(err)}`);
  }
  const probe = path.join(dir, `.${path.basename(file)}.${process.pid}.probe`);
  try {
    writeFileSync(probe, '', { flag: 'wx' });
  } catch (err) {
    fail(`cannot write in ${dir}: ${code(err)}`);
  }
  rmSync(probe, { force: true });
  return file;
}

/** A folder that must exist for `--name`. */
export function dirFlag(name: string, value: string): string {
  if (!existsSync(value) || !statSync(value).isDirectory()) throw new UsageError(`Expected a folder for --${name} but received ${JSON.stringify(value)} (not a folder)`);
  return value;
}

/** A labels CSV that must exist for `--name`. */
export function fileFlag(name: string, value: string): string {
  if (!existsSync(value)) throw new UsageError(`Expected a labels CSV for --${name} but received ${JSON.stringify(value)} (no such file)`);
  return value;
}

/** `--real-*` of `npm run train` and `npm run study`: a real labelled folder in training, cross-fitted over ticker folds. */
export interface RealArgs {
  dataDir: string;
  labelsFile?: string;
  contextDir?: string;
  repeat: number;
  listings: number;
  folds: number;
  /** Share of the real copies that see a degraded context (RealTrainingData.contextDropout); absent: none. */
  contextDropout?: number;
}

export const REAL_DATA_FLAGS: Record<string, FlagSpec> = {
  'real-data': { type: 'string' },
  'real-labels': { type: 'string' },
  'real-context-dir': { type: 'string' },
  'real-repeat': { type: 'string' },
  'real-listings': { type: 'string' },
  'real-folds': { type: 'string' },
  'real-context-dropout': { type: 'string' },
};

/** The `--real-*` flags (REAL_DATA_FLAGS), or undefined without `--real-data`; refuses `--calibrate-data` beside it. */
export function realDataFlags(args: ParsedArgs): RealArgs | undefined {
  const dir = stringFlag(args, 'real-data');
  if (dir === undefined) {
    for (const f of Object.keys(REAL_DATA_FLAGS)) {
      if (args.flags.has(f)) throw new UsageError(`Expected --real-data DIR with --${f} but received none`);
    }
    return undefined;
  }
  if (args.flags.has('calibrate-data')) {
    throw new UsageError('Expected either --real-data or --calibrate-data but received both (with --real-data the calibration comes from the out-of-fold predictions)');
  }
  const real: RealArgs = {
    dataDir: dirFlag('real-data', dir),
    repeat: intFlag(args, 'real-repeat', 4, 1, 1000),
    listings: intFlag(args, 'real-listings', 8, 0, 1000),
    folds: intFlag(args, 'real-folds', 5, 2, 1000),
  };
  const labels = stringFlag(args, 'real-labels');
  if (labels !== undefined) real.labelsFile = fileFlag('real-labels', labels);
  const ctx = stringFlag(args, 'real-context-dir');
  if (ctx !== undefined) real.contextDir = dirFlag('real-context-dir', ctx);
  const dropout = stringFlag(args, 'real-context-dropout');
  if (dropout !== undefined) {
    const v = Number(dropout);
    if (dropout.trim() === '' || !(v >= 0 && v <= 1)) throw new UsageError(`Expected a share in [0, 1] for --real-context-dropout but received ${JSON.stringify(dropout)}`);
    if (v > 0) real.contextDropout = v;
  }
  return real;
}

/** `TrainConfig.data.real` from the `--real-*` flags. */
export function realTrainingData(real: RealArgs): RealTrainingData {
  return {
    dataDir: real.dataDir,
    ...(real.labelsFile !== undefined ? { labelsFile: real.labelsFile } : {}),
    ...(real.contextDir !== undefined ? { contextDir: real.contextDir } : {}),
    repeat: real.repeat,
    listings: real.listings,
    ...(real.contextDropout !== undefined ? { contextDropout: real.contextDropout } : {}),
  };
}
