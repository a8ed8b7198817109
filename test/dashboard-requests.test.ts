import { randomUUID } from 'node:crypto';
import { request } from 'node:http';
import os from 'node:os';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDashboard, type RunningDashboard } from '../src/dashboard/server.js';
import { TOKEN_COOKIE } from '../src/dashboard/auth.js';
import { createLogger } from '../src/log.js';
import { closeRedis, createRedis } from '../jobs/connection.js';
import { QUEUE_NAMES } from '../jobs/queues.js';
import { clearPrefix } from './helpers/redis.js';

/**
 * Request checks of the dashboard: the Host a browser sends (DNS rebinding), the origin of state-changing requests
 * (cross-site forms and simple POSTs), the body type of writes, and the token's cookie and header parsing. No
 * workers: bull-board writes straight to the queues, which is what the checks must stop.
 */

const logger = createLogger({ name: 'dashboard-requests', level: 'silent' });
const TOKEN = 'requests-token-0123456789abcdef';

interface Answer {
  status: number;
  body: string;
}

/** A raw HTTP/1.1 request: fetch() will not send a chosen Host, and browsers' simple requests need exact headers. */
function send(base: string, path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: url.hostname, port: url.port, path: `${url.pathname}${url.search}`, method: init.method ?? 'GET', headers: { connection: 'close', ...init.headers } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.once('error', reject);
    req.end(init.body);
  });
}

describe('dashboard request checks (loopback, no token, queue actions on)', () => {
  const prefix = `t-dreq-${randomUUID().slice(0, 8)}`;
  let redis: Redis;
  let writable: RunningDashboard;
  let readOnly: RunningDashboard;
  let locked: RunningDashboard;
  let fetchQueue: Queue;
  let host: string;

  beforeAll(async () => {
    redis = createRedis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
    const common = { prefix, reportsDir: '/nonexistent', redis, logger, port: 0 };
    writable = await startDashboard({ ...common, queueActions: true });
    readOnly = await startDashboard(common);
    locked = await startDashboard({ ...common, token: TOKEN });
    fetchQueue = new Queue(QUEUE_NAMES.fetch, { connection: redis, prefix });
    host = `127.0.0.1:${writable.port}`;
  });

  afterEach(async () => {
    await fetchQueue.resume();
    await fetchQueue.drain(true);
  });

  afterAll(async () => {
    await writable?.close();
    await readOnly?.close();
    await locked?.close();
    await fetchQueue?.close();
    if (redis) {
      await clearPrefix(redis, prefix);
      await closeRedis(redis);
    }
  });

  const addPath = `/queues/api/queues/${QUEUE_NAMES.fetch}/add`;
  const pausePath = `/queues/api/queues/${QUEUE_NAMES.fetch}/pause`;
  const jobBody = JSON.stringify({ name: 'evil', data: { x: 1 }, options: {} });

  it('answers the loopback names on the bound port, and 421 to any other Host, on every route', async () => {
    const port = readOnly.port;
    for (const h of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
      expect((await send(readOnly.url, '/api/runs', { headers: { host: h } })).status, h).toBe(200);
    }
    for (const path of ['/', '/api/runs', '/metrics', '/queues', `/runs/${randomUUID()}`]) {
      for (const h of [`evil.example:${port}`, 'evil.example', `127.0.0.1:${port === 1 ? 2 : 1}`, `localhost.evil.example:${port}`, `127.0.0.1`]) {
        const r = await send(readOnly.url, path, { headers: { host: h } });
        expect(r.status, `${h} ${path}`).toBe(421);
        expect(r.body).toContain(`Expected Host 127.0.0.1:${port}, localhost:${port} or [::1]:${port} but received ${JSON.stringify(h)}`);
      }
    }
    // Refused before the token check: a rebound name learns nothing, not even that a token is wanted.
    expect((await send(locked.url, '/', { headers: { host: `evil.example:${locked.port}` } })).status).toBe(421);
  });

  it('refuses a cross-site simple POST (text/plain or form) that would add a job', async () => {
    const cases: Record<string, string>[] = [
      { 'content-type': 'text/plain', origin: 'http://evil.example' },
      { 'content-type': 'application/x-www-form-urlencoded', origin: 'null' },
      { 'content-type': 'text/plain', 'sec-fetch-site': 'cross-site' },
      { 'content-type': 'multipart/form-data; boundary=x', 'sec-fetch-site': 'same-site', origin: `http://${host}` },
      { 'content-type': 'application/json', origin: `http://localhost:${writable.port + 1}` },
      { 'content-type': 'application/json', origin: `https://${host}` },
    ];
    for (const headers of cases) {
      const r = await send(writable.url, addPath, { method: 'POST', headers: { host, ...headers }, body: jobBody });
      expect(r.status, JSON.stringify(headers)).toBe(403);
      expect(r.body).toMatch(/^403 Forbidden: /);
    }
    expect(await fetchQueue.getJobCountByTypes('waiting', 'prioritized', 'delayed')).toBe(0);
  });

  it('requires Content-Type application/json for writes with a body (415), even from the same origin', async () => {
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonp', undefined]) {
      const headers: Record<string, string> = { host, origin: `http://${host}`, 'sec-fetch-site': 'same-origin' };
      if (type !== undefined) headers['content-type'] = type;
      const r = await send(writable.url, addPath, { method: 'POST', headers, body: jobBody });
      expect(r.status, String(type)).toBe(415);
      expect(r.body).toBe(`415 Unsupported Media Type: Expected Content-Type application/json for a POST with a body but received ${type === undefined ? 'nothing' : JSON.stringify(type)}\n`);
    }
    expect(await fetchQueue.getJobCountByTypes('waiting', 'prioritized', 'delayed')).toBe(0);
  });

  it('refuses a PUT that pauses a queue from a rebound Host or a foreign Origin', async () => {
    const rebound = await send(writable.url, pausePath, { method: 'PUT', headers: { host: `evil.example:${writable.port}`, origin: `http://evil.example:${writable.port}` } });
    expect(rebound.status).toBe(421);
    const foreign = await send(writable.url, pausePath, { method: 'PUT', headers: { host, origin: 'http://evil.example' } });
    expect(foreign.status).toBe(403);
    expect(foreign.body).toBe(`403 Forbidden: Expected Origin http://${host} for a PUT but received "http://evil.example"\n`);
    expect(await fetchQueue.isPaused()).toBe(false);
  });

  it('still lets bull-board act from its own page (same origin, JSON body)', async () => {
    const same = { host, origin: `http://${host}`, 'sec-fetch-site': 'same-origin' };
    const added = await send(writable.url, addPath, { method: 'POST', headers: { ...same, 'content-type': 'application/json; charset=utf-8' }, body: jobBody });
    expect(added.status, added.body).toBe(200);
    expect(await fetchQueue.getJobCountByTypes('waiting', 'prioritized', 'delayed')).toBe(1);
    // No Origin and no Sec-Fetch-Site: curl or a script on the machine, which the Host check already bounds.
    expect((await send(writable.url, pausePath, { method: 'PUT', headers: { host } })).status).toBe(200);
    expect(await fetchQueue.isPaused()).toBe(true);
    const resumed = await send(writable.url, `/queues/api/queues/${QUEUE_NAMES.fetch}/resume`, { method: 'PUT', headers: { ...same, 'content-length': '0' } });
    expect(resumed.status).toBe(200);
    expect(await fetchQueue.isPaused()).toBe(false);
  });

  it('on every interface (0.0.0.0), takes the loopback names and the address a request arrived on', async () => {
    const all = await startDashboard({ prefix, reportsDir: '/nonexistent', redis, logger, port: 0, host: '0.0.0.0', token: TOKEN });
    try {
      const port = all.port;
      const loop = `http://127.0.0.1:${port}`;
      // 401, not 421: the Host passed, the token is what is missing.
      for (const h of [`127.0.0.1:${port}`, `localhost:${port}`]) expect((await send(loop, '/api/runs', { headers: { host: h } })).status, h).toBe(401);
      const rebound = await send(loop, '/api/runs', { headers: { host: `evil.example:${port}` } });
      expect(rebound.status).toBe(421);
      expect(rebound.body).toContain(`Expected Host localhost:${port}, 127.0.0.1:${port}, [::1]:${port} or an address of this server on port ${port} but received "evil.example:${port}"`);
      // A non-loopback address of this machine, where it has one: its own address passes, another one does not.
      const lan = Object.values(os.networkInterfaces()).flat().find((a) => a !== undefined && a.family === 'IPv4' && !a.internal)?.address;
      if (lan !== undefined) {
        const base = `http://${lan}:${port}`;
        expect((await send(base, '/api/runs', { headers: { host: `${lan}:${port}` } })).status).toBe(401);
        expect((await send(base, '/api/runs', { headers: { host: `203.0.113.9:${port}` } })).status).toBe(421);
      }
    } finally {
      await all.close();
    }
  });

  it('answers 401 (not 500) to a malformed cookie or Authorization header', async () => {
    const lockedHost = { host: `127.0.0.1:${locked.port}` };
    for (const cookie of [`${TOKEN_COOKIE}=%E0%A4%A`, `${TOKEN_COOKIE}=%`, TOKEN_COOKIE, `=;;${TOKEN_COOKIE}`, `a=b; ${TOKEN_COOKIE}="%zz"`]) {
      const r = await send(locked.url, '/api/runs', { headers: { ...lockedHost, cookie } });
      expect(r.status, cookie).toBe(401);
    }
    for (const authorization of ['Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', `Bearer${TOKEN}`, `Bearer ${TOKEN} extra`]) {
      expect((await send(locked.url, '/api/runs', { headers: { ...lockedHost, authorization } })).status, authorization).toBe(401);
    }
    // A malformed cookie beside a good bearer header does not spoil it.
    const both = await send(locked.url, '/api/runs', { headers: { ...lockedHost, cookie: `${TOKEN_COOKIE}=%E0%A4%A`, authorization: `Bearer ${TOKEN}` } });
    expect(both.status).toBe(200);
  });

  it('accepts the Bearer scheme in any case (RFC 7235: the scheme is case-insensitive)', async () => {
    for (const scheme of ['bearer', 'BEARER', 'bEaReR']) {
      const r = await send(locked.url, '/api/runs', { headers: { host: `127.0.0.1:${locked.port}`, authorization: `${scheme} ${TOKEN}` } });
      expect(r.status, scheme).toBe(200);
    }
  });
});
