import { readFileSync } from 'node:fs';
import path from 'node:path';
import { validateTicker } from '../data/validate.js';
import { canonicalTickers } from '../../jobs/enqueue-run.js';
import { PayloadError } from '../../jobs/payloads.js';
import { errorText } from '../util/errors.js';
import { UsageError } from './args.js';

/**
 * Ticker files, the one format of `enqueue --tickers-file`, `schedule add --tickers-file` and `schedule add --universe
 * FILE`: tickers separated by spaces, commas or lines, `#` starting a comment to the end of its line. They exist
 * because a large universe does not fit on a command line: `npm run` hands its arguments to `sh -c` as one string,
 * and Linux refuses a single argument over 128 KiB (E2BIG), about 20,000 tickers.
 */

/** Where tickers came from and what they are. */
export interface TickersFile {
  /** Absolute path of the file, or `stdin` for `-`. */
  name: string;
  /** Validated, upper-cased, without duplicates, in file order. */
  tickers: string[];
}

/** The words of a ticker file with the line each is on (1-based), comments left out. */
export function tickerWords(text: string): { word: string; line: number }[] {
  return text.split('\n').flatMap((raw, i) =>
    raw
      .replace(/#.*/, '')
      .split(/[\s,]+/)
      .filter((w) => w !== '')
      .map((word) => ({ word, line: i + 1 })),
  );
}

/**
 * Reads and validates a ticker file; `-` reads standard input. Throws UsageError for an unreadable file (naming the
 * flag), and otherwise prefixes the reason with the file's name: the first bad ticker with its line, no tickers at all,
 * or more than a run holds.
 */
export function readTickersFile(file: string, flag: string): TickersFile {
  const stdin = file === '-';
  let text: string;
  try {
    // File descriptor 0 reads a pipe or a redirected file to its end, synchronously, like any file.
    text = readFileSync(stdin ? 0 : file, 'utf8');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? errorText(err);
    throw new UsageError(`Expected a readable file (or - for stdin) for --${flag} but received ${JSON.stringify(file)} (${why})`);
  }
  const label = stdin ? 'stdin' : path.basename(file);
  const words = tickerWords(text);
  for (const { word, line } of words) {
    try {
      validateTicker(word);
    } catch (err) {
      throw new UsageError(`${label}: ${errorText(err)} (line ${line})`);
    }
  }
  try {
    return { name: stdin ? 'stdin' : path.resolve(file), tickers: canonicalTickers(words.map((w) => w.word)) };
  } catch (err) {
    if (err instanceof PayloadError) throw new UsageError(`${label}: ${err.message}`);
    throw err;
  }
}
