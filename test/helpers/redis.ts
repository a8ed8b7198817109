import net from 'node:net';
import { Queue } from 'bullmq';
import { deleteMatching, type RedisClient } from '../../jobs/connection.js';
import { prefixPattern } from '../../jobs/keys.js';
import { QUEUE_NAMES, SCHEDULE_QUEUE } from '../../jobs/queues.js';

/** Removes a test's queues (every pipeline queue and the schedule queue) and every other key under its prefix (a cluster's too). */
export async function clearPrefix(redis: RedisClient, prefix: string): Promise<void> {
  for (const name of [...Object.values(QUEUE_NAMES), SCHEDULE_QUEUE]) {
    const q = new Queue(name, { connection: redis, prefix });
    await q.obliterate({ force: true });
    await q.close();
  }
  await deleteMatching(redis, prefixPattern(prefix));
}

/** A TCP port on loopback that nothing listens on right now (for a test's private redis-server). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}
