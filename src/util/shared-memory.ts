/**
 * Typed arrays in shared memory: pool threads read and write them without a structured-clone copy, and the native
 * router's async forward works on them in place (a SharedArrayBuffer can be neither detached nor shrunk).
 */

type SharedTyped = Float64Array | Float32Array | Int32Array | Uint8Array;

/** Whether `a` is a typed array over a SharedArrayBuffer. */
export function isShared(a: unknown): boolean {
  return ArrayBuffer.isView(a) && a.buffer instanceof SharedArrayBuffer;
}

/** A zeroed typed array of `length` over shared memory. */
export function sharedArray<T extends SharedTyped>(ctor: { new (b: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number }, length: number): T {
  return new ctor(new SharedArrayBuffer(length * ctor.BYTES_PER_ELEMENT));
}

/** `a` itself when it is already over shared memory, else a copy of it there. */
export function sharedCopy<T extends SharedTyped>(a: T): T {
  if (isShared(a)) return a;
  const copy = sharedArray(a.constructor as { new (b: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number }, a.length);
  copy.set(a);
  return copy;
}
