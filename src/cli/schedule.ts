import { statSync } from 'node:fs';
import path from 'node:path';
import { Queue } from 'bullmq';
import { loadConfig } from '../config.js';
import { DEFAULT_UNIVERSE } from '../data/universe.js';
import type { SourceName } from '../data/types.js';
import { closeRedis, connectClient } from '../../jobs/connection.js';
import { SCHEDULE_QUEUE } from '../../jobs/queues.js';
import { addSchedule, listSchedules, removeSchedule, validateCron, validateScheduleId, type ScheduleSpec } from '../../jobs/schedule.js';
import { canonicalTickers } from '../../jobs/enqueue-run.js';
import { MAX_DAYS } from '../limits.js';
import { PayloadError } from '../../jobs/payloads.js';
import { errorText } from '../util/errors.js';
import { intFlag, parseArgs, stringFlag, UsageError } from './args.js';
import { readTickersFile } from './tickers-file.js';
import { CommandError, EXIT, runCommand, runIfMain } from './run.js';

export const SCHEDULE_USAGE = `Usage:
  npm run schedule -- add --cron PATTERN [--tz ZONE] --universe NAME|FILE|--tickers-file FILE|- [--source yahoo|sim]
                        [--days N] [--id ID]
  npm run schedule -- list
  npm run schedule -- remove ID

Cron-scheduled runs through BullMQ job schedulers, stored in Redis: any worker process serving the schedule queue
(\`npm run workers\` does by default) turns each tick into exactly one run, however many workers or schedulers run.

add options:
  --cron PATTERN     5 fields (minute hour day month weekday) or 6 (seconds first), e.g. '0 30 16 * * 1-5';
                     firing at most once a minute (each tick is a whole run)
  --tz ZONE          IANA time zone of the pattern (default UTC), e.g. America/New_York
  --universe U       'default' (the built-in universe) or a file of tickers (whitespace or comma separated, # comments)
  --tickers-file F   a file of tickers in the same format, or - for standard input (then --id is required)
  --source S         yahoo (default) or sim
  --days N           routed days per ticker, 1..${MAX_DAYS} (default 120)
  --id ID            schedule id, a-z 0-9 - (default: the universe name or the file's base name); adding with an
                     existing id replaces that schedule

Exit status: 0 done, 1 failed (Redis, unknown id on remove), 2 bad usage.`;

const FLAGS = {
  cron: { type: 'string' },
  tz: { type: 'string' },
  universe: { type: 'string' },
  'tickers-file': { type: 'string' },
  source: { type: 'string' },
  days: { type: 'string' },
  id: { type: 'string' },
  help: { type: 'boolean' },
} as const;

export type ScheduleCommand = { cmd: 'add'; spec: ScheduleSpec } | { cmd: 'list' } | { cmd: 'remove'; id: string } | { cmd: 'help' };

const UNIVERSES: Record<string, () => string[]> = {
  default: () => DEFAULT_UNIVERSE.map((u) => u.ticker),
};

/** Tickers of a universe name or file; the file's tickers are validated (first bad one named with its line). */
export function readUniverse(arg: string): { name: string; tickers: string[] } {
  const named = UNIVERSES[arg];
  if (named) return { name: arg, tickers: canonicalTickers(named()) };
  let isFile = false;
  try {
    isFile = statSync(arg).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) {
    throw new UsageError(`Expected a universe name (${Object.keys(UNIVERSES).join(', ')}) or a readable file for --universe but received ${JSON.stringify(arg)}`);
  }
  return readTickersFile(arg, 'universe');
}

function defaultId(universe: string): string {
  const base = path.basename(universe).replace(/\.[^.]*$/, '').toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '');
  return base.slice(0, 64) || 'universe';
}

/** Parses the command line; throws UsageError with the reason. */
export function parseScheduleArgs(argv: readonly string[]): ScheduleCommand {
  const args = parseArgs(argv, FLAGS);
  if (args.flags.has('help')) return { cmd: 'help' };
  const [cmd, ...rest] = args.positionals;
  const noFlags = () => {
    const f = [...args.flags.keys()][0];
    if (f !== undefined) throw new UsageError(`Expected no options for ${cmd} but received --${f}`);
  };
  switch (cmd) {
    case 'list':
      noFlags();
      if (rest.length > 0) throw new UsageError(`Expected nothing after list but received ${JSON.stringify(rest[0])}`);
      return { cmd: 'list' };
    case 'remove': {
      noFlags();
      if (rest.length !== 1) throw new UsageError(`Expected exactly one ID after remove but received ${rest.length}`);
      try {
        return { cmd: 'remove', id: validateScheduleId(rest[0]) };
      } catch (err) {
        if (err instanceof PayloadError) throw new UsageError(err.message);
        throw err;
      }
    }
    case 'add': {
      if (rest.length > 0) throw new UsageError(`Expected options only after add but received ${JSON.stringify(rest[0])}`);
      const cron = stringFlag(args, 'cron');
      if (cron === undefined) throw new UsageError('Expected --cron PATTERN for add but received nothing');
      // Checked here too, so a bad pattern is refused before connecting to Redis.
      try {
        validateCron(cron);
      } catch (err) {
        if (err instanceof PayloadError) throw new UsageError(err.message);
        throw err;
      }
      const uni = stringFlag(args, 'universe');
      const file = stringFlag(args, 'tickers-file');
      if (uni === undefined && file === undefined) throw new UsageError('Expected --universe NAME|FILE or --tickers-file FILE for add but received nothing');
      if (uni !== undefined && file !== undefined) throw new UsageError('Expected one of --universe and --tickers-file for add but received both');
      const id = stringFlag(args, 'id');
      // A schedule's default id is its universe's name; standard input has none worth keeping.
      if (file === '-' && id === undefined) throw new UsageError('Expected --id ID with --tickers-file - (stdin has no name to default to) but received nothing');
      const source = (stringFlag(args, 'source') ?? 'yahoo') as SourceName;
      if (source !== 'yahoo' && source !== 'sim') throw new UsageError(`Expected yahoo or sim for --source but received ${JSON.stringify(source)}`);
      const { name, tickers } = uni !== undefined ? readUniverse(uni) : readTickersFile(file!, 'tickers-file');
      const spec: ScheduleSpec = {
        id: id ?? defaultId(name),
        cron,
        data: { universe: name, tickers, source, days: intFlag(args, 'days', 120, 1, MAX_DAYS) },
      };
      const tz = stringFlag(args, 'tz');
      if (tz !== undefined) spec.tz = tz;
      return { cmd: 'add', spec };
    }
    default:
      throw new UsageError(`Expected add, list or remove but received ${cmd === undefined ? 'nothing' : JSON.stringify(cmd)}`);
  }
}

export function main(argv: readonly string[], out: (line: string) => void = console.log): Promise<number> {
  return runCommand('schedule', () => schedule(argv, out));
}

async function schedule(argv: readonly string[], out: (line: string) => void): Promise<number> {
  const command = parseScheduleArgs(argv);
  if (command.cmd === 'help') {
    out(SCHEDULE_USAGE);
    return EXIT.ok;
  }
  const config = loadConfig();
  const redis = await connectClient(config, 'moe-schedule');
  const queue = new Queue(SCHEDULE_QUEUE, { connection: redis, prefix: config.prefix });
  try {
    switch (command.cmd) {
      case 'add': {
        const r = await addSchedule(queue, command.spec);
        const d = command.spec.data;
        out(`schedule ${r.id}: '${command.spec.cron}' ${command.spec.tz ?? 'UTC'}, ${d.tickers.length} tickers from ${d.source}, ${d.days} days; next run ${r.next ?? 'unknown'}`);
        return 0;
      }
      case 'list': {
        const all = await listSchedules(queue);
        if (all.length === 0) out('no schedules');
        for (const s of all) out(`${s.id}\t'${s.cron}' ${s.tz}\tnext ${s.next ?? '-'}\t${s.tickers} tickers (${s.universe}) from ${s.source}, ${s.days} days`);
        return 0;
      }
      case 'remove': {
        if (await removeSchedule(queue, command.id)) {
          out(`removed schedule ${command.id}`);
          return 0;
        }
        throw new CommandError(`Expected an existing schedule id for remove but received ${JSON.stringify(command.id)} (see: npm run schedule -- list)`);
      }
    }
  } catch (err) {
    if (err instanceof PayloadError) throw new CommandError(err.message, EXIT.usage, { cause: err });
    if (err instanceof CommandError) throw err;
    throw new CommandError(errorText(err), EXIT.failed, { cause: err });
  } finally {
    await queue.close();
    await closeRedis(redis);
  }
}

await runIfMain(import.meta.url, main);
