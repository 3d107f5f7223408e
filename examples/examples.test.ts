import { describe, it, expect } from 'vitest';
import { readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { validatePolicyFile, validatePolicyText } from '../policies/validate.ts';
import { readFileSync } from 'node:fs';

const DIR = fileURLToPath(new URL('.', import.meta.url));
// The day the examples were last reviewed: waivers must still hold then.
const NOW = new Date('2026-11-21T12:00:00Z');

/** Expected lint findings per example: [conduit, flow, rule, severity, waived]. Keep in step with README.md. */
const EXPECTED: Record<
  string,
  Array<[string | undefined, string | undefined, string, 'error' | 'warning', boolean]>
> = {
  'water-plant.yaml': [
    ['scada-to-control', 'poll', 'SL-write-from-lower', 'error', true],
    ['scada-to-safety', undefined, 'SL-skip', 'warning', false],
  ],
  'minimal.yaml': [],
  'monitor-mode.yaml': [['office-to-plant', 'unknown-tcp', 'any-port', 'error', true]],
  'ipv6.yaml': [],
};

describe('examples', () => {
  it('every example in the directory has expectations here', async () => {
    const files = (await readdir(DIR)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
    expect(files).toEqual(Object.keys(EXPECTED).sort());
  });

  it.each(Object.entries(EXPECTED))('%s is valid with the expected lint findings', async (file, expected) => {
    const result = await validatePolicyFile(join(DIR, file), { now: NOW });
    expect(result.errors).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.policy).toBeDefined();
    expect(result.lint.map((f) => [f.conduit, f.flow, f.rule, f.severity, f.waiver !== undefined])).toEqual(
      expected,
    );
    // Every finding points at a real place in the file.
    for (const f of result.lint) expect(f.position, `${f.rule} ${f.path.join('.')}`).toBeDefined();
    // Only unwaived warnings reach the warnings list.
    expect(result.warnings.map((w) => w.code)).toEqual(
      expected
        .filter(([, , , sev, waived]) => sev === 'warning' && !waived)
        .map(([, , rule]) => `lint.${rule}`),
    );
  });

  it('DPI destinations are single hosts inside their zones', async () => {
    for (const file of Object.keys(EXPECTED)) {
      const { policy } = await validatePolicyFile(join(DIR, file), { now: NOW });
      expect(policy, file).toBeDefined();
      if (!policy) continue;
      const pairs = new Set<string>();
      for (const c of policy.conduits.values()) {
        const pair = `${c.from}>${c.to}`;
        expect(pairs.has(pair), `${file}: two conduits ${pair}`).toBe(false);
        pairs.add(pair);
        for (const fl of c.flows) {
          if (fl.protocol !== 'modbus' && fl.protocol !== 'opcua') continue;
          expect(fl.to.addresses.length, `${file} ${c.name}/${fl.name}`).toBeGreaterThan(0);
          for (const a of fl.to.addresses) {
            expect(a.prefix, `${file} ${c.name}/${fl.name} ${a.text}`).toBe(a.family === 4 ? 32 : 128);
          }
        }
      }
    }
  });

  it('the water plant waiver expires: after 2027-06-30 the write finding is an error again', async () => {
    const result = await validatePolicyFile(join(DIR, 'water-plant.yaml'), {
      now: new Date('2027-07-01T00:00:00Z'),
    });
    expect(result.ok).toBe(false);
    expect(result.errors.map((e) => e.code).sort()).toEqual([
      'lint.SL-write-from-lower',
      'lint.waiver-expired',
    ]);
  });
});

describe('the demo lab policy', () => {
  it('stays valid after the example waiver expires (the demo renews it relative to today)', async () => {
    const { demoPolicyText } = await import('../test/lab/demo.ts');
    const later = new Date('2031-03-01T00:00:00Z');
    const r = validatePolicyText(await demoPolicyText(later), 'demo.yaml', { now: later });
    expect(r.errors).toEqual([]);
    expect(r.ok).toBe(true);
    // The example itself is not renewed: on that date its waiver has expired and it fails.
    const raw = validatePolicyText(
      readFileSync(join(import.meta.dirname, 'water-plant.yaml'), 'utf8'),
      'w.yaml',
      { now: later },
    );
    expect(raw.ok).toBe(false);
  });
});
