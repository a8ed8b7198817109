import { seedTokens, type SeedTokens, type SeedTokensTask } from './tokens.js';

/**
 * Piscina task of `simulatedTokensParallel`: one market history's tokens (simulation and features). Its series are in
 * shared memory (`seedTokens`), so they reach the caller without a copy.
 */
export default function tokensTask(task: SeedTokensTask): SeedTokens {
  return seedTokens(task.hidden, task.seed, task.opts);
}
