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
