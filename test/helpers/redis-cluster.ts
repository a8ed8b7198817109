import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort } from './redis.js';

const run = promisify(execFile);

/** True when this machine has both binaries a test cluster needs. */
export function haveRedisClusterTools(): boolean {
  return spawnSync('redis-server', ['--version']).status === 0 && spawnSync('redis-cli', ['--version']).status === 0;
}

export interface TestCluster {
  /** Client ports of the three masters on 127.0.0.1. */
  ports: number[];
  /** `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`, the value of REDIS_CLUSTER_NODES. */
  nodes: string;
  stop(): Promise<void>;
}

/** `n` distinct free loopback ports (a port handed out twice in a row would make two servers collide). */
async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

function startServer(port: number, busPort: number, dir: string): Promise<ChildProcess> {
  // The cluster bus port is set explicitly: the default, port + 10000, may be taken or above 65535.
  const args = ['--cluster-enabled', 'yes', '--port', String(port), '--cluster-port', String(busPort), '--bind', '127.0.0.1',
    '--cluster-config-file', `${dir}/nodes-${port}.conf`, '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no'];
  const p = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    createInterface({ input: p.stdout! }).on('line', (l) => {
      out = (out + l + '\n').slice(-2000);
      if (l.includes('Ready to accept connections')) resolve(p);
    });
    p.once('exit', (code) => reject(new Error(`redis-server on port ${port} exited with ${code}: ${out}`)));
  });
}

async function stopServer(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  });
}

/** Polls every node until each reports cluster_state:ok and knows all the slots. */
async function waitClusterOk(ports: number[], timeoutMs: number): Promise<void> {
  const conns = ports.map((port) => new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 }));
  const t0 = Date.now();
  try {
    for (;;) {
      const infos = await Promise.all(conns.map((c) => c.cluster('INFO') as Promise<string>));
      if (infos.every((i) => /cluster_state:ok/.test(i) && /cluster_slots_ok:16384/.test(i) && new RegExp(`cluster_known_nodes:${ports.length}\\b`).test(i))) return;
      if (Date.now() - t0 > timeoutMs) throw new Error(`Expected cluster_state:ok on every node within ${timeoutMs} ms but received:\n${infos.join('\n')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    for (const c of conns) c.disconnect();
  }
}

/**
 * Three Redis Cluster masters on free loopback ports, no replicas, no persistence, their node files under `dir`;
 * resolves once the cluster is formed and every node reports cluster_state:ok.
 */
export async function startTestCluster(dir: string): Promise<TestCluster> {
  const [p1, p2, p3, b1, b2, b3] = await freePorts(6);
  const ports = [p1!, p2!, p3!];
  const bus = [b1!, b2!, b3!];
  const servers: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(servers.map(stopServer));
  };
  try {
    for (let i = 0; i < 3; i++) servers.push(await startServer(ports[i]!, bus[i]!, dir));
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await waitClusterOk(ports, 20_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return { ports, nodes: ports.map((p) => `127.0.0.1:${p}`).join(','), stop };
}
