import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, RequestHandler, Response } from 'express';

/** Cookie that carries the token for a browser after it once opened a `?token=` link. */
export const TOKEN_COOKIE = 'moe_dashboard_token';

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Constant-time comparison (of digests, so the lengths match and leak nothing). */
function sameToken(given: string, expected: Buffer): boolean {
  return timingSafeEqual(digest(given), expected);
}

/** `decodeURIComponent`, or undefined for a malformed escape (`%E0%A4%A`), which can hold no token we issued. */
function decodeCookieValue(raw: string): string | undefined {
  try {
    return decodeURIComponent(raw);
  } catch (err) {
    if (err instanceof URIError) return undefined;
    throw err;
  }
}

function cookieToken(req: Request): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === TOKEN_COOKIE) return decodeCookieValue(part.slice(eq + 1).trim());
  }
  return undefined;
}

/** RFC 7235 §2.1: the scheme is case-insensitive (`bearer`, `BEARER`), then one or more spaces, then the token. */
const BEARER_RE = /^bearer +(\S.*)$/i;

function bearerToken(req: Request): string | undefined {
  const h = req.headers.authorization;
  return h === undefined ? undefined : BEARER_RE.exec(h)?.[1]?.trim();
}

/**
 * Requires the dashboard token on every request: `Authorization: Bearer <token>` (Prometheus, curl), or the
 * cookie a browser receives by opening any page once with `?token=<token>` (it is then redirected to the same
 * page without the token, so the token does not linger in the address bar or history). Anything else gets 401.
 */
export function requireToken(token: string): RequestHandler {
  const expected = digest(token);
  return (req: Request, res: Response, next: NextFunction) => {
    const given = bearerToken(req) ?? cookieToken(req);
    if (given !== undefined && sameToken(given, expected)) {
      next();
      return;
    }
    const query = typeof req.query.token === 'string' ? req.query.token : undefined;
    if (query !== undefined && sameToken(query, expected) && (req.method === 'GET' || req.method === 'HEAD')) {
      // HttpOnly: page scripts never need it; SameSite=Strict: other sites cannot ride on it.
      res.cookie(TOKEN_COOKIE, token, { httpOnly: true, sameSite: 'strict', path: '/' });
      const url = new URL(req.originalUrl, 'http://dashboard.invalid');
      url.searchParams.delete('token');
      res.redirect(303, `${url.pathname}${url.search}`);
      return;
    }
    res
      .status(401)
      .set('WWW-Authenticate', 'Bearer realm="moe-dashboard"')
      .type('text/plain')
      .send('401 Unauthorized: this dashboard needs its token (Authorization: Bearer <token>, or open it once with ?token=<token>)\n');
  };
}
