import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { WORKER_ROLES } from '../jobs/queues.js';

// The deployment files cannot be run here (no container runtime in CI), so their contract is checked as data: what
// a wrong edit would silently break (persistence, the GPU, the commands the containers run).
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Service {
  image?: string;
  build?: { context: string; target: string };
  command?: string[];
  environment?: Record<string, string>;
  profiles?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  deploy?: { resources?: { reservations?: { devices?: { driver: string; count: number; capabilities: string[] }[] } } };
  ports?: string[];
  stop_grace_period?: string;
  init?: boolean;
}

const compose = parse(readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;
const dockerfile = readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8');

describe('docker-compose.yml', () => {
  it('runs Redis with an append-only file, noeviction and a health check the workers wait for', () => {
    const redis = services.redis!;
    const cmd = redis.command!.join(' ');
    expect(cmd).toMatch(/--appendonly yes/);
    expect(cmd).toMatch(/--maxmemory-policy noeviction/);
    expect(redis.healthcheck!.test).toEqual(['CMD', 'redis-cli', 'ping']);
    for (const name of ['fetch', 'route', 'route-cpu', 'report', 'dashboard']) {
      expect(services[name]!.depends_on, name).toEqual({ redis: { condition: 'service_healthy' } });
    }
  });

  it('starts every worker with a real CLI, valid roles and room to shut down cleanly', () => {
    for (const [name, s] of Object.entries(services)) {
      if (name === 'redis') continue;
      const [node, importFlag, loader, script, ...args] = s.command!;
      expect([node, importFlag, loader], name).toEqual(['node', '--import', 'tsx']);
      expect(existsSync(path.join(ROOT, script!)), `${name}: ${script}`).toBe(true);
      expect(s.init, name).toBe(true);
      const only = args.indexOf('--only');
      if (only >= 0) for (const role of args[only + 1]!.split(',')) expect(WORKER_ROLES, `${name}: ${role}`).toContain(role);
    }
    expect(services.fetch!.command).toContain('fetch');
    expect(services.report!.command!.join(' ')).toMatch(/--only report,schedule/);
    // Docker's grace period must outlast the workers' own shutdown time-out.
    const grace = Number.parseInt(services.fetch!.stop_grace_period!, 10) * 1000;
    expect(grace).toBeGreaterThan(Number(services.fetch!.environment!.SHUTDOWN_TIMEOUT_MS));
  });

  it('gives the route worker a GPU and the CUDA image, and keeps a CPU variant behind a profile', () => {
    const route = services.route!;
    expect(route.build).toEqual({ context: '.', target: 'route' });
    expect(route.deploy!.resources!.reservations!.devices).toEqual([{ driver: 'nvidia', count: 1, capabilities: ['gpu'] }]);
    expect(route.profiles).toBeUndefined();
    const cpu = services['route-cpu']!;
    expect(cpu.profiles).toEqual(['cpu']);
    expect(cpu.build!.target).toBe('app');
    expect(cpu.environment!.MOE_BACKEND).toBe('cpu');
    expect(cpu.deploy).toBeUndefined();
    for (const name of ['fetch', 'report', 'dashboard']) expect(services[name]!.build!.target, name).toBe('app');
  });

  it('publishes the dashboard on loopback only and demands a token', () => {
    const d = services.dashboard!;
    expect(d.ports).toEqual(['127.0.0.1:3000:3000']);
    expect(d.environment!.DASHBOARD_TOKEN).toMatch(/^\$\{DASHBOARD_TOKEN:\?/);
  });
});

describe('Dockerfile', () => {
  const stages = [...dockerfile.matchAll(/^FROM (\S+) AS (\S+)$/gm)].map((m) => ({ from: m[1], name: m[2] }));

  it('builds the app image, a CUDA build stage from it and the route image that takes only its addon', () => {
    expect(stages).toEqual([
      { from: 'node:20-bookworm', name: 'app' },
      { from: 'app', name: 'cuda-build' },
      { from: 'app', name: 'route' },
    ]);
    expect(dockerfile).toMatch(/^RUN npm ci --omit=dev\b/m);
    expect(dockerfile).toMatch(/^ENV npm_config_nodedir=\/usr\/local$/m);
    expect(dockerfile).toMatch(/cuda-nvcc-\$\{CUDA_PACKAGE_VERSION\}/);
    // The CUDA stage fails the build when CMake did not enable the CUDA back-end.
    expect(dockerfile).toMatch(/grep "CUDA backend enabled"/);
    expect(dockerfile).toMatch(/^COPY --from=cuda-build \/app\/build\/Release\/moe_router\.node \/app\/build\/Release\/moe_router\.node$/m);
  });

  it('keeps the working tree and secrets out of the build context', () => {
    const ignore = readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['node_modules', 'build', 'reports', '.env', '.*']) expect(ignore).toContain(entry);
  });
});
