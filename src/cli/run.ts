import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError } from '../config.js';
import { errorText } from '../util/errors.js';
import { RedisUnavailableError } from '../../jobs/connection.js';
import { UsageError } from './args.js';

/**
 * How every CLI starts and ends. A command's body throws what went wrong and `runCommand` turns it into one message
 * on stderr, prefixed with the command's name, and an exit status that means the same everywhere.
 */

/** Exit statuses of every CLI. */
export const EXIT = {
  ok: 0,
  /** The work failed: Redis unreachable, a run that failed, an evaluation that could not read its data. */
  failed: 1,
  /** Bad usage or configuration: nothing was started. */
  usage: 2,
  /** Stopped by Ctrl-C (128 + SIGINT). */
  interrupted: 130,
} as const;

/** An expected failure of a command, with the exit status it means (default `EXIT.failed`). */
export class CommandError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.failed, options?: { cause?: unknown }) {
    super(message, options);
    this.name = this.constructor.name;
    this.exitCode = exitCode;
  }
}

/**
 * Runs a command's body and returns its exit status: what the body returns (0 when nothing), else, by what it threw,
 * `UsageError` → the reason and a pointer to `--help`, 2; `ConfigError` → the problems, 2; `RedisUnavailableError`,
 * `CommandError` → the message, 1 or the error's own status; anything else → its name and message, 1.
 */
export async function runCommand(name: string, body: () => Promise<number | void>): Promise<number> {
  try {
    return (await body()) ?? EXIT.ok;
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`${name}: ${err.message}\nRun with --help for usage.`);
      return EXIT.usage;
    }
    if (err instanceof ConfigError) {
      console.error(`${name}: ${err.message}`);
      return EXIT.usage;
    }
    if (err instanceof CommandError) {
      console.error(`${name}: ${err.message}`);
      return err.exitCode;
    }
    if (err instanceof RedisUnavailableError) {
      console.error(`${name}: ${err.message}`);
      return EXIT.failed;
    }
    console.error(`${name}: ${err instanceof Error ? `${err.name}: ${err.message}` : errorText(err)}`);
    return EXIT.failed;
  }
}

/** True when the module at `metaUrl` is the script Node was started with (not imported by a test or another CLI). */
export function isMainModule(metaUrl: string): boolean {
  const script = process.argv[1];
  return script !== undefined && metaUrl === pathToFileURL(path.resolve(script)).href;
}

/**
 * The entry point of a CLI module: runs `main` on the process arguments when the module is the started script and
 * sets `process.exitCode` (never `process.exit`, so pending output is flushed).
 */
export async function runIfMain(metaUrl: string, main: (argv: readonly string[]) => Promise<number>): Promise<void> {
  if (isMainModule(metaUrl)) process.exitCode = await main(process.argv.slice(2));
}
