/**
 * The entry of `cache` (a Map kept in order of use, least recent first) for `key`, made by `make` when absent. The
 * entry becomes the most recently used, and the least recently used ones beyond `max` entries are dropped.
 */
export function lruEntry<K, V>(cache: Map<K, V>, key: K, max: number, make: () => V): V {
  let value = cache.get(key);
  if (value === undefined) value = make();
  cache.delete(key);
  cache.set(key, value);
  while (cache.size > max) cache.delete(cache.keys().next().value!);
  return value;
}

/**
 * `lruEntry` for a value in the making: a promise that rejects leaves the cache (the next caller makes it again), and
 * `stats` counts the calls that found their entry (hits) and those that made it (misses).
 */
export function lruPromise<K, V>(
  cache: Map<K, Promise<V>>,
  key: K,
  max: number,
  make: () => Promise<V>,
  stats: { hits: number; misses: number },
): Promise<V> {
  let made = false;
  const entry = lruEntry(cache, key, max, () => {
    made = true;
    const value = make();
    value.catch(() => {
      if (cache.get(key) === value) cache.delete(key);
    });
    return value;
  });
  stats[made ? 'misses' : 'hits'] += 1;
  return entry;
}
