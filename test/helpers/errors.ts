import { expect } from 'vitest';
import { SourceError } from '../../src/data/errors.js';

/** The SourceError a promise rejects with; fails the test when it resolves or rejects with anything else. */
export async function sourceError(p: Promise<unknown>): Promise<SourceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SourceError);
  return err as SourceError;
}
