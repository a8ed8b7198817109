import { pino, type Logger, type DestinationStream } from 'pino';
import type { LogLevel } from './config.js';

export type { Logger };

export interface LoggerOptions {
  /** Component name, shown on every line. */
  name: string;
  /** @defaultValue `info` */
  level?: LogLevel;
  /**
   * `json`: one pino JSON object per line on stdout (services, collected by log shippers).
   * `pretty`: `HH:MM:SS level name: message key=value` on stderr, for people at a terminal.
   * @defaultValue `json`
   */
  format?: 'json' | 'pretty';
  /** Where pretty lines go. @defaultValue `process.stderr` */
  stream?: NodeJS.WritableStream;
}

const LEVEL_NAMES: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const OMIT = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  if (v !== null && typeof v === 'object' && 'message' in v && 'type' in v) {
    // pino's serialised error: keep the message, the stack only at debug level would be noise here.
    return JSON.stringify((v as { message: unknown }).message);
  }
  return JSON.stringify(v);
}

/** Turns pino's JSON lines into short readable lines (pino-pretty is not a dependency). */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const t = new Date(typeof o.time === 'number' ? o.time : Date.now()).toISOString().slice(11, 19);
  const lvl = LEVEL_NAMES[o.level as number] ?? String(o.level);
  const extras = Object.entries(o)
    .filter(([k]) => !OMIT.has(k))
    .map(([k, v]) => `${k}=${formatValue(v)}`)
    .join(' ');
  return `${t} ${lvl} ${String(o.name ?? '')}: ${String(o.msg ?? '')}${extras ? ` ${extras}` : ''}\n`;
}

function prettyStream(out: NodeJS.WritableStream): DestinationStream {
  return { write: (s: string) => void out.write(prettyLine(s)) };
}

export function createLogger(opts: LoggerOptions): Logger {
  const level = opts.level ?? 'info';
  if ((opts.format ?? 'json') === 'pretty') {
    return pino({ name: opts.name, level }, prettyStream(opts.stream ?? process.stderr));
  }
  return pino({ name: opts.name, level });
}
