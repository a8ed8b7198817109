import os from 'node:os';

/** Task of a pool test: the nice value of the thread that runs it (on Linux a thread's own). */
export default function priorityTask(): number {
  return os.getPriority();
}
