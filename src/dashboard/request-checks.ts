import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { describeValue } from '../util/describe.js';

/**
 * Checks every request passes before anything else (the token check included), because a dashboard on loopback
 * with no token trusts whoever can reach it, and a browser on the same machine can be made to reach it:
 *
 * - DNS rebinding: a page on `evil.example` whose name then resolves to 127.0.0.1 reads the dashboard as its own
 *   origin; only its `Host` header gives it away. So `Host` must name this server: the bound host on the bound
 *   port, plus `localhost`, `127.0.0.1` and `[::1]` when the dashboard listens on loopback or on every interface
 *   (then also the address the connection arrived on). Anything else gets 421.
 * - Cross-site writes: a foreign page can send a "simple" POST (form or `text/plain` body, no preflight) that
 *   carries no token at all on a token-less dashboard. So a state-changing request whose `Origin` is not this
 *   very origin, or whose `Sec-Fetch-Site` says another site sent it, gets 403; and a write with a body must be
 *   `application/json` (415 otherwise), a type no cross-site request can send without a CORS preflight, which
 *   this server never grants.
 *
 * Requests with neither `Origin` nor `Sec-Fetch-Site` come from curl, Prometheus or scripts, not from a browser
 * acting for another site; the Host check and the token bound those.
 */

/** Methods that only read. Every other method (POST, PUT, PATCH, DELETE, anything unknown) counts as a write. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** `Sec-Fetch-Site` values of requests a browser sent on behalf of a page of another origin. */
const FOREIGN_FETCH_SITES = new Set(['cross-site', 'same-site']);

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'] as const;

/** Addresses that mean "every interface" to `listen`. */
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '[::]']);

/** A Host header: a name or IPv4 address, or a bracketed IPv6 address, then an optional port. */
const HOST_RE = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?$/i;

export interface RequestCheckOptions {
  /** The interface the dashboard listens on (`DASHBOARD_HOST`). */
  host: string;
  /** Whether it listens on loopback (then the loopback names are this server too). */
  loopback: boolean;
}

/** `::1` → `[::1]`: the form a Host header carries. */
function hostForm(address: string): string {
  const a = address.toLowerCase();
  return a.includes(':') && !a.startsWith('[') ? `[${a}]` : a;
}

/** The address a connection arrived on, as a Host header names it (`::ffff:10.0.0.5` → `10.0.0.5`). */
function localName(req: Request): string {
  const a = req.socket.localAddress ?? '';
  return hostForm(a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a);
}

/** `a`, `a or b`, `a, b or c`. */
function oneOf(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} or ${items.at(-1)!}`;
}

/** A media type without its parameters, lower case: `Application/JSON; charset=utf-8` → `application/json`. */
function mediaType(header: string): string {
  return (header.split(';')[0] ?? '').trim().toLowerCase();
}

/** `Origin` in the serialised form of `URL.origin` (default port dropped, lower case); `null` and junk give `null`. */
function originOf(header: string): string {
  return URL.canParse(header) ? new URL(header).origin : 'null';
}

/** Whether the request carries a body: chunked, or a non-zero length. */
function hasBody(req: Request): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const n = Number(req.headers['content-length'] ?? '0');
  return !Number.isFinite(n) || n > 0;
}

interface Refusal {
  status: 403 | 415 | 421;
  message: string;
}

const REASONS: Record<Refusal['status'], string> = { 403: 'Forbidden', 415: 'Unsupported Media Type', 421: 'Misdirected Request' };

/** The names (lower case, IPv6 bracketed) a Host header may give, and whether the connection's address counts. */
interface HostRule {
  names: readonly string[];
  wildcard: boolean;
}

function hostRule(o: RequestCheckOptions): HostRule {
  const bound = hostForm(o.host);
  const wildcard = WILDCARD_HOSTS.has(bound);
  const names = [...new Set([...(wildcard ? [] : [bound]), ...(o.loopback || wildcard ? LOOPBACK_NAMES : [])])];
  return { names, wildcard };
}

/** The request's own origin (`http://127.0.0.1:3000`) when its Host names this server, else a refusal. */
function checkHost(req: Request, rule: HostRule): string | Refusal {
  // The port is the one the connection arrived on, so `port: 0` needs no bookkeeping.
  const port = req.socket.localPort ?? 0;
  const given = req.headers.host;
  const m = given === undefined ? null : HOST_RE.exec(given);
  const name = m?.[1]?.toLowerCase();
  const givenPort = m?.[2] === undefined ? 80 : Number(m[2]);
  const allowed = rule.wildcard ? [...rule.names, localName(req)] : rule.names;
  if (given !== undefined && name !== undefined && givenPort === port && allowed.includes(name)) return new URL(`http://${given}`).origin;
  const want = [...rule.names.map((n) => `${n}:${port}`), ...(rule.wildcard ? [`an address of this server on port ${port}`] : [])];
  return { status: 421, message: `Expected Host ${oneOf(want)} but received ${given === undefined ? 'nothing' : describeValue(given)}` };
}

/** A refusal for a write that another site's page may have sent, or that carries a body other than JSON. */
function checkWrite(req: Request, own: string): Refusal | undefined {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && FOREIGN_FETCH_SITES.has(site.toLowerCase())) {
    return { status: 403, message: `Expected Sec-Fetch-Site same-origin or none for a ${req.method} but received ${describeValue(site)}` };
  }
  const origin = req.headers.origin;
  // Plain HTTP only: this server has no TLS, so an https:// origin is another origin.
  if (origin !== undefined && originOf(origin) !== own) {
    return { status: 403, message: `Expected Origin ${own} for a ${req.method} but received ${describeValue(origin)}` };
  }
  const type = req.headers['content-type'];
  if (hasBody(req) && (type === undefined || mediaType(type) !== 'application/json')) {
    const received = type === undefined ? 'nothing' : describeValue(type);
    return { status: 415, message: `Expected Content-Type application/json for a ${req.method} with a body but received ${received}` };
  }
  return undefined;
}

export function checkRequests(o: RequestCheckOptions): RequestHandler {
  const rule = hostRule(o);
  return (req: Request, res: Response, next: NextFunction) => {
    const own = checkHost(req, rule);
    const refusal = typeof own !== 'string' ? own : SAFE_METHODS.has(req.method) ? undefined : checkWrite(req, own);
    if (refusal === undefined) {
      next();
      return;
    }
    res.status(refusal.status).type('text/plain').send(`${refusal.status} ${REASONS[refusal.status]}: ${refusal.message}\n`);
  };
}
