import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedis } from '../jobs/connection.js';
import { clearPrefix } from './helpers/redis.js';

/**
 * `npm run workers` must not leave its worker behind when npm is stopped: npm forwards SIGTERM to the script's
 * process, so the script has to be the worker itself (`exec node …`), not a shell or a tsx wrapper that outlives it.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PREFIX = `npmsig-${randomUUID().slice(0, 8)}`;

function childrenOf(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there is no such process
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

afterAll(async () => {
  const redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379', { name: 'moe-test-npm-signals' });
  await clearPrefix(redis, PREFIX);
  redis.disconnect();
});

describe('npm scripts and signals', () => {
  it('stops the worker when npm run workers gets SIGTERM, leaving no process behind', async () => {
    const npm = spawn('npm', ['run', '--silent', 'workers', '--', '--only', 'fetch'], {
      cwd: REPO,
      env: { ...process.env, MOE_PREFIX: PREFIX, LOG_LEVEL: 'info', MOE_SKIP_SETUP: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const started = new Promise<void>((resolve) => {
      createInterface({ input: npm.stdout! }).on('line', (l) => l.includes('workers started') && resolve());
    });
    const exited = new Promise<number | null>((resolve) => npm.once('exit', (code) => resolve(code)));
    await started;
    // Every process under npm, down the tree (a shell, a tsx wrapper and its node, or the worker alone).
    const tree: number[] = [];
    for (let level = childrenOf(npm.pid!); level.length > 0; level = level.flatMap(childrenOf)) tree.push(...level);
    expect(tree.length).toBeGreaterThan(0);
    npm.kill('SIGTERM');
    await exited;
    const deadline = Date.now() + 15_000;
    while (tree.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const left = tree.filter(alive);
    for (const pid of left) process.kill(pid, 'SIGKILL');
    expect(left).toEqual([]);
  });
});
