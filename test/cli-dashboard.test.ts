import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli/dashboard.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { freePort } from './helpers/redis.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(REPO, 'src/cli/dashboard.ts');
const TSX = import.meta.resolve('tsx');

/** A port nothing listens on right now. */

function runCli(env: Record<string, string>) {
  // Only what the CLI needs: DASHBOARD_* from the developer's shell must not leak into the test.
  const base = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' };
  const child = spawn(process.execPath, ['--import', TSX, CLI], { env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, stderr: () => stderr };
}

const prefix = `t-clid-${randomUUID().slice(0, 8)}`;

// The dashboard's queue handles write each queue's meta key: remove everything under this test's prefix.
afterAll(async () => {
  const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  for await (const keys of redis.scanStream({ match: `${prefix}:*`, count: 500 })) {
    if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
  }
  await closeRedis(redis);
});

describe('dashboard CLI', () => {
  it('returns exit status 2 on a bad flag', async () => {
    const errors: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void errors.push(String(m)));
    try {
      expect(await main(['--port', '1'])).toBe(2);
      expect(errors.join('\n')).toContain('Expected one of --help but received "--port"');
      expect(await main(['extra'])).toBe(2);
      expect(errors.join('\n')).toContain('Expected no positional arguments but received "extra"');
    } finally {
      spy.mockRestore();
    }
  });

  it('refuses a non-loopback host without DASHBOARD_TOKEN (exit 2), before listening', async () => {
    const { exited, stderr } = runCli({ DASHBOARD_HOST: '0.0.0.0', DASHBOARD_PORT: String(await freePort()), MOE_PREFIX: prefix });
    expect(await exited).toBe(2);
    expect(stderr()).toContain('Expected a non-empty DASHBOARD_TOKEN because DASHBOARD_HOST "0.0.0.0" is not loopback but received nothing');
  });

  it('serves on DASHBOARD_PORT, logs where, and stops on SIGTERM', async () => {
    const port = await freePort();
    const { child, exited, stderr } = runCli({ DASHBOARD_PORT: String(port), MOE_PREFIX: prefix, LOG_LEVEL: 'info' });
    const listening = new Promise<Record<string, unknown>>((resolve) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        const o = JSON.parse(line) as Record<string, unknown>;
        if (o.msg === 'dashboard listening') resolve(o);
      });
    });
    const line = await Promise.race([listening, exited.then(() => Promise.reject(new Error(`dashboard exited early: ${stderr()}`)))]);
    expect(line.url).toBe(`http://127.0.0.1:${port}`);
    expect(line.token).toBe(false);
    expect(line.queueActions).toBe(false);
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('moe_queue_jobs{queue="moe-route",state="waiting"} 0');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
