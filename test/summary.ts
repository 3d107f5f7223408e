/**
 * Prints the one-line summary CI reads ("N passed, N failed, N skipped") from vitest's JSON report, so the
 * result of `make test` is plain whatever reporter is on screen.
 *
 *   node test/summary.ts test-output/vitest.json
 */
import { readFileSync } from 'node:fs';

interface Report {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests: number;
}

const file = process.argv[2] ?? 'test-output/vitest.json';
const r = JSON.parse(readFileSync(file, 'utf8')) as Report;
const skipped = r.numPendingTests + r.numTodoTests;
console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`);
process.exitCode = r.numFailedTests > 0 || r.numPassedTests === 0 ? 1 : 0;
