import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/workers.js';
import { prettyLine } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { initParams, saveModel } from '../src/router/model.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');
let tmp: string;
let modelPath: string;
const prefix = `t-cliw-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'moe-cliw-'));
  modelPath = path.join(tmp, 'router.safetensors');
  await saveModel(modelPath, { hidden: 16, params: initParams(16, 2), temperature: 1 });
});

afterAll(async () => {
  const redis = createRedis('redis://127.0.0.1:6379');
  for (const name of Object.values(QUEUE_NAMES)) {
    const q = new Queue(name, { connection: redis, prefix });
    await q.obliterate({ force: true });
    await q.close();
  }
  await closeRedis(redis);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('workers CLI', () => {
  it('returns exit status 2 on an unknown stage or flag, before starting anything', async () => {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      for (const [args, msg] of [
        [['--only', 'fetch,gpu'], 'Expected one of fetch, route, report, schedule for --only but received "gpu"'],
        [['--concurrency', '0'], 'Expected integer in 1..64 for --concurrency but received "0"'],
        [['extra'], 'Expected no positional arguments but received "extra"'],
      ] as const) {
        errors.length = 0;
        expect(await main([...args])).toBe(2);
        expect(errors.join('\n')).toContain(msg);
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('starts, logs JSON, and shuts down cleanly on SIGTERM', async () => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, '--only', 'route,report'], {
      env: { ...process.env, MOE_PREFIX: prefix, MOE_MODEL: modelPath, REPORTS_DIR: path.join(tmp, 'reports'), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: Record<string, unknown>[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const started = new Promise<void>((resolve) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const o = JSON.parse(line) as Record<string, unknown>;
        lines.push(o);
        if (o.msg === 'workers started') resolve();
      });
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    await Promise.race([started, exited.then(() => Promise.reject(new Error(`workers exited early: ${stderr}`)))]);
    const startLine = lines.find((l) => l.msg === 'workers started')!;
    expect(startLine.roles).toEqual(['route', 'report']);
    expect(startLine.prefix).toBe(prefix);
    expect(String(startLine.backend)).toMatch(/^(simd-avx512|simd-avx2|scalar)$/);
    // auto on a machine without a usable GPU: the line says why the router runs on the CPU.
    expect(typeof startLine.fallbackReason).toBe('string');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(lines.map((l) => l.msg)).toContain('stopped');
  });
});

describe('readable log lines', () => {
  it('turns pino JSON into a short line with extra fields', () => {
    const json = JSON.stringify({ level: 40, time: Date.UTC(2026, 0, 2, 3, 4, 5), pid: 1, hostname: 'h', name: 'moe', msg: 'fetch failed', jobId: 'j 1', n: 3 });
    expect(prettyLine(json)).toBe('03:04:05 WARN moe: fetch failed jobId="j 1" n=3\n');
    expect(prettyLine('not json')).toBe('not json');
  });
});
