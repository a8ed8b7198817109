import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Suites share one Redis and a 2-core machine; run files one after another for stable timings.
    fileParallelism: false,
    pool: 'forks',
  },
});
