import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * `npm run workers` as a child process of a test (real processes: kill -9 and several route workers are what is
 * under test), with its JSON log lines kept for the test to read.
 */

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WORKERS_CLI = path.join(REPO, 'src/cli/workers.ts');
const TSX = import.meta.resolve('tsx');

export interface WorkerProc {
  child: ChildProcess;
  /** Its log lines so far (pino JSON). */
  lines: Record<string, unknown>[];
  /** Resolves with the first log line whose msg is `msg` (also one already seen). */
  waitFor(msg: string): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
}

/**
 * Starts `workers --only <only> ...extra` and resolves once it logged `workers started`; rejects with its stderr if it
 * exits first. Every process started is added to `running`, for the test's clean-up.
 */
export function startWorkerProcess(only: string, env: NodeJS.ProcessEnv, running: WorkerProc[], extra: string[] = []): Promise<WorkerProc> {
  const child = spawn(process.execPath, ['--import', TSX, WORKERS_CLI, '--only', only, ...extra], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (l: Record<string, unknown>) => void }[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(o);
    for (const w of waiters.filter((x) => x.msg === o.msg)) w.resolve(o);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: WorkerProc = {
    child,
    lines,
    exited,
    waitFor: (msg) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ msg, resolve }));
    },
  };
  running.push(proc);
  return Promise.race([
    proc.waitFor('workers started').then(() => proc),
    exited.then((code) => Promise.reject(new Error(`${only} worker exited with ${code} before starting: ${stderr}`))),
  ]);
}

/** Sends `signal` unless the process has already exited; resolves with its exit code. */
export async function stopWorkerProcess(p: WorkerProc, signal: NodeJS.Signals): Promise<number | null> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
  return p.exited;
}

/** The worker name BullMQ stores as a job's `processedBy` contains this for jobs `p` ran in stage `role`. */
export function processedByTag(p: WorkerProc, role: string): string {
  return `:${p.child.pid}:${role}`;
}
