import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Queue } from 'bullmq';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { RedisClient } from '../../jobs/connection.js';
import type { Logger } from 'pino';
import { isRunId } from '../../jobs/keys.js';
import { QUEUE_NAMES } from '../../jobs/queues.js';
import { REPORT_FILES } from '../report/types.js';
import { readRunMeta } from '../../jobs/run-meta.js';
import { errorText } from '../util/errors.js';
import { requireToken } from './auth.js';
import { notFoundPage, runPage, runsPage } from './html.js';
import { createDashboardMetrics } from './metrics.js';
import { checkRequests } from './request-checks.js';
import { listRuns, reportFolder, runView } from './runs.js';

export interface DashboardOptions {
  /** Interface to bind. Anything but loopback needs `token`. @defaultValue `127.0.0.1` */
  host?: string;
  /** TCP port; 0 picks a free one. @defaultValue 3000 */
  port?: number;
  /** Required on every request when set; required to be set when `host` is not loopback (≥ 16 characters). */
  token?: string | undefined;
  /** Let bull-board retry, promote, clean and remove jobs. @defaultValue false (read-only) */
  queueActions?: boolean;
  /** Key and queue prefix of the pipeline to show. */
  prefix: string;
  /** REPORTS_DIR: where `<runId>/` report folders are read from. */
  reportsDir: string;
  /** Client connection (the dashboard only reads, except bull-board actions when enabled). */
  redis: RedisClient;
  logger: Logger;
  /** Runs listed on the runs page. @defaultValue 50 */
  runsShown?: number;
}

export type DashboardErrorCode = 'TOKEN_REQUIRED' | 'BAD_OPTION' | 'LISTEN_FAILED';

export class DashboardError extends Error {
  readonly code: DashboardErrorCode;
  constructor(code: DashboardErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = this.constructor.name;
    this.code = code;
  }
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export function isLoopback(host: string): boolean {
  return LOOPBACK.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Report files a browser may fetch: exactly the six a run writes, nothing else in the folder. */
const SERVED_FILES = new Set<string>(Object.values(REPORT_FILES));

function checkOptions(o: DashboardOptions): { host: string; port: number } {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? 3000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new DashboardError('BAD_OPTION', `Expected integer in 0..65535 for port but received ${String(port)}`);
  }
  if (o.token !== undefined && o.token.length < 16) {
    throw new DashboardError('BAD_OPTION', `Expected at least 16 characters for token but received ${o.token.length}`);
  }
  if (!isLoopback(host) && o.token === undefined) {
    throw new DashboardError(
      'TOKEN_REQUIRED',
      `Expected a DASHBOARD_TOKEN because host ${JSON.stringify(host)} is not loopback but received nothing: the dashboard would be open to the network`,
    );
  }
  return { host, port };
}

export interface DashboardApp {
  app: Express;
  /** Queue handles the app reads (and bull-board acts on); closed by `close`. */
  queues: Queue[];
  close(): Promise<void>;
}

/**
 * The Express app: runs page, run pages and files, `/metrics`, `/api/runs`, bull-board at `/queues`. Every request
 * first passes the Host, origin and body-type checks of request-checks.ts, then the token when one is set.
 */
export function createDashboardApp(o: DashboardOptions): DashboardApp {
  const { host } = checkOptions(o);
  const queues = [QUEUE_NAMES.fetch, QUEUE_NAMES.route, QUEUE_NAMES.report].map((name) => new Queue(name, { connection: o.redis, prefix: o.prefix }));
  const readOnly = !(o.queueActions ?? false);

  const board = new ExpressAdapter();
  board.setBasePath('/queues');
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: readOnly, allowRetries: !readOnly })),
    serverAdapter: board,
    options: { uiConfig: { boardTitle: `moe-router · ${o.prefix}`, hideDocsLink: true } },
  });

  const app = express();
  app.disable('x-powered-by');
  app.use((_req: Request, res: Response, next: NextFunction) => {
    res.set({ 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'X-Frame-Options': 'DENY' });
    next();
  });
  // Before the token: a rebound name or a foreign page learns nothing, not even that a token is wanted.
  app.use(checkRequests({ host, loopback: isLoopback(host) }));
  if (o.token !== undefined) app.use(requireToken(o.token));

  const shown = o.runsShown ?? 50;
  const ownPage = (res: Response) => res.set('Content-Security-Policy', "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'");

  app.get('/', async (_req, res) => {
    const runs = await listRuns(o.redis, o.prefix, o.reportsDir, shown);
    ownPage(res).type('html').send(runsPage(runs));
  });

  app.get('/api/runs', async (_req, res) => {
    res.json(await listRuns(o.redis, o.prefix, o.reportsDir, shown));
  });

  app.get('/runs/:runId', async (req, res) => {
    const runId = req.params.runId;
    const meta = isRunId(runId) ? await readRunMeta(o.redis, o.prefix, runId, { tickerList: false }) : undefined;
    if (meta === undefined) {
      ownPage(res).status(404).type('html').send(notFoundPage(`No run ${runId} (unknown, expired, or not a run id).`));
      return;
    }
    const view = await runView(meta, o.reportsDir);
    const md = view.hasReport ? await readFile(path.join(reportFolder(o.reportsDir, runId), REPORT_FILES.summaryMd), 'utf8').catch(() => undefined) : undefined;
    ownPage(res).type('html').send(runPage(view, md));
  });

  app.get('/runs/:runId/files/:file', (req, res) => {
    const { runId, file } = req.params;
    if (!isRunId(runId) || !SERVED_FILES.has(file)) {
      res.status(404).type('text/plain').send(`Expected a run id and one of ${[...SERVED_FILES].join(', ')} but received ${JSON.stringify(`${runId}/${file}`)}\n`);
      return;
    }
    // A report re-rendered by a retried job keeps its name: revalidate (ETag) instead of caching blindly.
    res.set('Cache-Control', 'no-cache');
    if (file.endsWith('.md')) res.type('text/markdown; charset=utf-8');
    res.sendFile(path.join(reportFolder(o.reportsDir, runId), file), (err?: Error) => {
      if (err && !res.headersSent) res.status(404).type('text/plain').send(`No ${file} for run ${runId}\n`);
    });
  });

  const metrics = createDashboardMetrics({ redis: o.redis, prefix: o.prefix, queues, routeQueue: QUEUE_NAMES.route });
  app.get('/metrics', async (_req, res) => {
    const text = await metrics.render();
    res.type(metrics.contentType).send(text);
  });

  app.use('/queues', board.getRouter() as express.Router);

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    o.logger.error({ err, url: req.originalUrl }, 'dashboard request failed');
    if (!res.headersSent) res.status(500).type('text/plain').send(`500: ${errorText(err)}\n`);
  });

  return {
    app,
    queues,
    close: async () => {
      metrics.registry.clear();
      await Promise.allSettled(queues.map((q) => q.close()));
    },
  };
}

export interface RunningDashboard {
  /** Base URL, e.g. `http://127.0.0.1:3000`. */
  url: string;
  port: number;
  server: Server;
  /** Stops listening, drops idle keep-alive connections and closes the queue handles. Safe to call twice. */
  close(): Promise<void>;
}

/** Creates the app and listens on `host:port`; rejects with DashboardError when it cannot. */
export async function startDashboard(o: DashboardOptions): Promise<RunningDashboard> {
  const { host, port } = checkOptions(o);
  const d = createDashboardApp(o);
  let server: Server;
  try {
    server = await new Promise<Server>((resolve, reject) => {
      const s = d.app.listen(port, host, (err?: Error) => (err ? reject(err) : resolve(s)));
      s.once('error', reject);
    });
  } catch (cause) {
    await d.close();
    throw new DashboardError('LISTEN_FAILED', `Expected to listen on ${host}:${port} but received ${errorText(cause)}`, { cause });
  }
  const actual = (server.address() as AddressInfo).port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shownHost}:${actual}`,
    port: actual,
    server,
    close: () =>
      (closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await d.close();
      })()),
  };
}
