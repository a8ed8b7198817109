import { movedResult } from '../util/task-pool.js';
import { seedTokens, type SeedTokens, type SeedTokensTask } from './tokens.js';

/**
 * Piscina task of `simulatedTokensParallel`: one market history's tokens (simulation and features). The series'
 * buffers move to the caller instead of being copied: about 7 MB a history that the caller's thread (whose turns the
 * routers' training calls wait for) would otherwise copy once more.
 */
export default function tokensTask(task: SeedTokensTask): SeedTokens {
  const out = seedTokens(task.hidden, task.seed, task.opts);
  return movedResult(out, [out.x, out.vol, out.risk]);
}
