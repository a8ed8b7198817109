import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FlowProducer, Queue } from 'bullmq';
import { ConfigError, loadConfig, routerBackendChoice, type Config } from '../config.js';
import { DOMAINS } from '../domains.js';
import { DEFAULT_UNIVERSE } from '../data/universe.js';
import { prettyLine } from '../log.js';
import { REPORT_FILES, type RunSummary } from '../report/types.js';
import { closeRedis, createRedis, deleteMatching, waitReady, type RedisTarget } from '../../jobs/connection.js';
import { runKeysPattern, runsIndexKey, universeKeysPattern } from '../../jobs/keys.js';
import { QUEUE_NAMES, ROLES, type Role } from '../../jobs/queues.js';
import { watchRun } from '../../jobs/watch-run.js';
import { enqueueRun } from '../../jobs/enqueue-run.js';
import { errorText } from '../util/errors.js';
import { reportLines } from './enqueue.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

/**
 * `npm run demo`: the whole pipeline on one machine, offline. Starts a throw-away redis-server when nothing answers
 * at REDIS_URL, one worker process per stage (the same topology as a multi-host deployment, so the demo exercises
 * job hand-over through Redis rather than in-process shortcuts), enqueues the built-in universe from the
 * simulator, prints a summary and stops everything it started: on success, on error and on Ctrl-C.
 */

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEMO_DAYS = 120;
const DEMO_SEED = 7;

type Cleanup = () => Promise<void>;

function say(line: string): void {
  console.log(line);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

async function redisAnswers(target: RedisTarget): Promise<boolean> {
  const r = createRedis(target, { name: 'moe-demo-probe' });
  r.on('error', () => undefined); // the probe's failure is the answer; ioredis would otherwise print it
  try {
    await waitReady(r, 1_500);
    return true;
  } catch {
    return false;
  } finally {
    r.disconnect();
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** Stops a child we started: SIGTERM, then SIGKILL if it has not exited in time. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (!(await waitExit(child, graceMs))) {
    child.kill('SIGKILL');
    await waitExit(child, 2_000);
  }
}

async function startRedisServer(cleanups: Cleanup[]): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'moe-demo-redis-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: 'ignore',
  });
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (e) => reject(new Error(`could not start redis-server (is it installed? npm run setup): ${e.message}`))),
  );
  cleanups.push(() => stopChild(child, 5_000));
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (await Promise.race([redisAnswers(url), spawnError])) return url;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not answer within 10 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function startWorker(role: Role, env: NodeJS.ProcessEnv, onExit: (role: Role, code: number | null) => void): ChildProcess {
  const tsx = import.meta.resolve('tsx');
  const child = spawn(process.execPath, ['--import', tsx, path.join(REPO_ROOT, 'src/cli/workers.ts'), '--only', role], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Workers log JSON at LOG_LEVEL (warn by default here); show those lines readably and tagged, so problems stay
  // visible without burying the demo's own output.
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    createInterface({ input: stream }).on('line', (line) => {
      if (line.trim() !== '') process.stderr.write(`[${role}] ${line.startsWith('{') ? prettyLine(line) : `${line}\n`}`);
    });
  }
  child.once('exit', (code) => onExit(role, code));
  return child;
}

interface ClassLine {
  cls: string;
  tickers: number;
  primary: string;
  share: number;
  confidence: number;
}

/** Per asset class: the domain most of its tickers went to, that share, and their mean confidence. */
export function classLines(summary: RunSummary): ClassLine[] {
  const out: ClassLine[] = [];
  const classes = [...DOMAINS, undefined];
  for (const cls of classes) {
    const ts = summary.tickers.filter((t) => t.class === cls);
    if (ts.length === 0) continue;
    const counts = DOMAINS.map((d) => ts.filter((t) => t.domain === d).length);
    let best = 0;
    for (let d = 1; d < counts.length; d++) if (counts[d]! > counts[best]!) best = d;
    const chosen = ts.filter((t) => t.domain === DOMAINS[best]);
    out.push({
      cls: cls ?? 'Unknown',
      tickers: ts.length,
      primary: DOMAINS[best]!,
      share: counts[best]! / ts.length,
      confidence: chosen.reduce((s, t) => s + t.confidence, 0) / chosen.length,
    });
  }
  return out;
}

function printSummary(summary: RunSummary): void {
  say('');
  say(`Routed ${summary.tickers.length} tickers (${summary.tokens} ticker-days) on ${summary.backend}:`);
  say(`  ${'class'.padEnd(14)} ${'tickers'.padStart(7)}  ${'primary expert'.padEnd(14)} ${'share'.padStart(6)} ${'conf.'.padStart(6)}`);
  for (const l of classLines(summary)) {
    say(
      `  ${l.cls.padEnd(14)} ${String(l.tickers).padStart(7)}  ${l.primary.padEnd(14)} ${`${(l.share * 100).toFixed(0)}%`.padStart(6)} ${l.confidence.toFixed(2).padStart(6)}`,
    );
  }
  const right = summary.tickers.filter((t) => t.class !== undefined && t.class === t.domain).length;
  const labelled = summary.tickers.filter((t) => t.class !== undefined).length;
  if (labelled > 0) say(`  routed to their own class: ${right}/${labelled}`);
  if (summary.failed.length > 0) {
    say(`Failed (${summary.failed.length}):`);
    for (const f of summary.failed) say(`  ${f.ticker}: ${f.reason}`);
  } else {
    say('Failed: none');
  }
  const t = summary.timings;
  say(`Timings: fetch ${t.fetchMs} ms, route ${t.routeMs} ms, report ${t.reportMs} ms, total ${t.totalMs} ms`);
}

async function runDemo(config: Config, signal: AbortSignal, cleanups: Cleanup[]): Promise<number> {
  // Fail before starting anything when the route worker would refuse the backend.
  routerBackendChoice(config.backend);
  if (!existsSync(config.modelPath)) {
    say(`demo: no model file at ${config.modelPath}; build one with \`npm run train\` or set MOE_MODEL`);
    return 1;
  }
  let target: RedisTarget = config;
  let redisUrl = config.redisUrl;
  let prefix = config.prefix;
  let ownRedis = false;
  if (await redisAnswers(target)) {
    // A shared Redis: a private prefix keeps this demo's jobs away from any other workers on it.
    prefix = `${config.prefix}-demo-${randomBytes(4).toString('hex')}`;
    say(`Using Redis at ${redisUrl} (key prefix ${prefix})`);
  } else {
    redisUrl = await startRedisServer(cleanups);
    target = redisUrl;
    ownRedis = true;
    say(`Started redis-server at ${redisUrl}`);
  }

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    REDIS_URL: redisUrl,
    // The demo's own redis-server is a single server, whatever cluster the environment named.
    REDIS_CLUSTER_NODES: ownRedis ? '' : process.env.REDIS_CLUSTER_NODES,
    MOE_PREFIX: prefix,
    MOE_MODEL: config.modelPath,
    REPORTS_DIR: config.reportsDir,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  };
  const redis = createRedis(target, { name: 'moe-demo' });
  const flow = new FlowProducer({ connection: redis, prefix });
  const reportQueue = new Queue(QUEUE_NAMES.report, { connection: redis, prefix });
  cleanups.push(async () => {
    if (!ownRedis) {
      // Remove the private prefix's queues, run keys and drift history; report files stay on disk.
      for (const name of Object.values(QUEUE_NAMES)) {
        const q = new Queue(name, { connection: redis, prefix });
        await q.obliterate({ force: true }).catch((e: unknown) => say(`demo: could not clean queue ${name}: ${String(e)}`));
        await q.close();
      }
      for (const match of [runKeysPattern(prefix), universeKeysPattern(prefix)]) await deleteMatching(redis, match);
      await redis.del(runsIndexKey(prefix));
    }
    await Promise.allSettled([flow.close(), reportQueue.close()]);
    await closeRedis(redis);
  });

  const exited = new AbortController();
  let exitReason = '';
  const children = ROLES.map((role) =>
    startWorker(role, env, (r, code) => {
      if (!exitReason) exitReason = `the ${r} worker exited early (code ${String(code)})`;
      exited.abort();
    }),
  );
  // Registered before any wait so a failure or Ctrl-C still stops every worker (cleanups run last-in first-out:
  // workers stop before their queues are removed and before the Redis they use).
  cleanups.push(() => Promise.all(children.map((c) => stopChild(c, 15_000))).then(() => undefined));
  say(`Started workers: ${ROLES.map((r, i) => `${r} (pid ${children[i]!.pid})`).join(', ')}`);

  const tickers = DEFAULT_UNIVERSE.map((u) => u.ticker);
  const run = await enqueueRun(
    { flow, redis, prefix, runTtlSeconds: config.runTtlSeconds, shardSize: config.shardSize },
    { tickers, source: 'sim', range: { days: DEMO_DAYS }, seed: DEMO_SEED },
  );
  say(`Enqueued run ${run.runId}: ${run.tickers.length} tickers × ${DEMO_DAYS} days from the simulator`);

  const both = AbortSignal.any([signal, exited.signal]);
  let final;
  try {
    final = await watchRun({
      redis,
      prefix,
      runId: run.runId,
      reportQueue,
      signal: both,
      onProgress: (m) => say(`  ${(m.status === 'queued' && m.fetched + m.fetchFailed > 0 ? 'fetching' : m.status).padEnd(9)} fetched ${m.fetched}/${m.tickerCount}${m.fetchFailed ? `, ${m.fetchFailed} failed` : ''}`),
    });
  } catch (err) {
    if (exited.signal.aborted && !signal.aborted) throw new Error(exitReason);
    throw err;
  }
  if (final.reportDir === undefined) {
    say(`demo: run ${final.status}: ${final.error ?? 'no report'}`);
    return 1;
  }
  const summary = JSON.parse(await readFile(path.join(final.reportDir, REPORT_FILES.summaryJson), 'utf8')) as RunSummary;
  printSummary(summary);
  say('');
  for (const line of reportLines(final.reportDir)) say(line);
  return final.status === 'finished' ? 0 : 1;
}

export function main(): Promise<number> {
  return runCommand('demo', demo);
}

async function demo(): Promise<number> {
  const config: Config = loadConfig();
  const cleanups: Cleanup[] = [];
  const abort = new AbortController();
  const onSignal = () => {
    // npm forwards the terminal's signal too, so the same Ctrl-C can arrive twice.
    if (abort.signal.aborted) return;
    say('\nStopping (Ctrl-C)...');
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await runDemo(config, abort.signal, cleanups);
  } catch (err) {
    if (abort.signal.aborted) return EXIT.interrupted;
    if (err instanceof ConfigError) throw err;
    throw new CommandError(errorText(err), EXIT.failed, { cause: err });
  } finally {
    for (const c of cleanups.reverse()) {
      await c().catch((e: unknown) => console.error(`demo: cleanup failed: ${errorText(e)}`));
    }
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

await runIfMain(import.meta.url, () => main());
