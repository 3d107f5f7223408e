import { afterEach, describe, expect, it, vi } from 'vitest';
import { gate, needsFile } from './gate.ts';

describe('the integration gate', () => {
  const ci = process.env['CI'];
  afterEach(() => {
    if (ci === undefined) delete process.env['CI'];
    else process.env['CI'] = ci;
    vi.restoreAllMocks();
  });

  it('runs when nothing is missing', () => {
    process.env['CI'] = 'false';
    expect(gate('x.test.ts', [false, undefined]).run).toBe(true);
  });

  it('skips outside CI and prints every missing prerequisite', () => {
    process.env['CI'] = 'false';
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const g = gate('x.test.ts', ['root (netns)', needsFile('/nonexistent/nft', 'nft')]);
    expect(g.run).toBe(false);
    expect(warn).toHaveBeenCalledWith(
      'x.test.ts: skipped: needs root (netns), nft (/nonexistent/nft; make deps installs it)',
    );
  });

  it('never skips under CI=true: a missing prerequisite must fail the tests instead', () => {
    process.env['CI'] = 'true';
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    expect(gate('x.test.ts', ['root (netns)']).run).toBe(true);
    expect(warn).not.toHaveBeenCalled();
  });
});
