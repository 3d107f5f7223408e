import { describe, expect, it } from 'vitest';
import { formatPath, formatProblem, formatReport, quote, reportJson, sanitize } from './format.ts';
import { validatePolicyText } from './validate.ts';
import type { ValidationResult } from './validate.ts';
import type { LintFinding, Problem } from './types.ts';

const EXAMPLE: Problem = {
  severity: 'error',
  code: 'semantic.modbus-function',
  path: ['conduits', 'hmi-to-plc', 'flows', 0, 'modbus', 'rules', 1, 'functions', 0],
  message: '99 is not a Modbus function code',
  file: 'water-plant.yaml',
  position: { line: 42, column: 13 },
};

/** The example policy, with a 99 among the write functions. */
const WATER = `version: 1
gateway:
  name: line1-gw
  management:
    interface: mgmt0
    allowFrom: [192.168.100.0/24]
zones:
  enterprise: { securityLevel: 1, interfaces: [eth1], networks: [10.1.0.0/16], description: Corporate IT }
  control:    { securityLevel: 3, interfaces: [eth2], networks: [10.2.0.0/24] }
assets:
  hmi-1: { zone: enterprise, addresses: [10.1.0.10] }
  plc-1: { zone: control, addresses: [10.2.0.20] }
conduits:
  hmi-to-plc:
    from: enterprise
    to: control
    flows:
      - name: poll
        protocol: modbus
        from: [hmi-1]
        to: [plc-1]
        modbus:
          unitIds: [1]
          rules:
            - functions: [read-holding-registers, read-input-registers]
              addresses: 0-999
            - functions: [write-single-register, write-multiple-registers]
              addresses: 100-110
              values: 0-5000
waivers:
  - rule: SL-write-from-lower
    conduit: hmi-to-plc
    rationale: "Setpoint writes are bounded by the PLC's interlocks \\e[31m"
    expires: 2027-06-30
`;
const NOW = new Date('2026-12-01T00:00:00Z');

describe('formatProblem / formatPath', () => {
  it('prints the issue example exactly', () => {
    expect(formatProblem(EXAMPLE)).toBe(
      'water-plant.yaml:42:13 conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]: 99 is not a Modbus function code',
    );
  });

  it('prints a real validation problem in that format', () => {
    const text = WATER.replace(
      '[write-single-register, write-multiple-registers]',
      '[99, write-multiple-registers]',
    );
    const r = validatePolicyText(text, 'water-plant.yaml', { now: NOW });
    expect(r.errors.map(formatProblem)).toEqual([
      'water-plant.yaml:27:27 conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]: 99 is not a Modbus function code',
    ]);
  });

  it('handles missing parts and odd keys', () => {
    expect(formatProblem({ ...EXAMPLE, position: undefined })).toBe(
      'water-plant.yaml conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]: 99 is not a Modbus function code',
    );
    expect(formatProblem({ ...EXAMPLE, path: [] })).toBe(
      'water-plant.yaml:42:13: 99 is not a Modbus function code',
    );
    expect(formatProblem({ ...EXAMPLE, path: [], file: undefined, position: undefined })).toBe(
      '99 is not a Modbus function code',
    );
    expect(formatPath(['zones', 'a b', 'x.y', 3, '\u001b[2J'])).toBe('zones["a b"]["x.y"][3]["\\u001b[2J"]');
    expect(formatPath([])).toBe('');
  });

  it('escapes terminal control characters and shortens quoted values', () => {
    expect(sanitize('a\u001b[31mb\nc\u202ed')).toBe('a\\u001b[31mb\\nc\\u202ed');
    expect(quote("it's")).toBe("'it\\'s'");
    expect(quote('x'.repeat(100))).toBe(`'${'x'.repeat(80)}…'`);
    expect(formatProblem({ ...EXAMPLE, message: 'bad\u0007bell' })).toMatch(/bad\\u0007bell$/);
  });
});

describe('formatReport / reportJson', () => {
  const warning: Problem = {
    severity: 'warning',
    code: 'lint.SL-skip',
    path: ['conduits', 'hmi-to-plc'],
    message: 'conduit spans 2 SL steps [62443-3-3 SR 5.1]',
    file: 'w.yaml',
    position: { line: 14, column: 5 },
  };
  const risk: LintFinding = {
    rule: 'SL-write-from-lower',
    severity: 'error',
    conduit: 'hmi-to-plc',
    flow: 'poll',
    path: ['conduits', 'hmi-to-plc', 'flows', 0],
    message: 'writes into SL 3',
    cites: '62443-3-3 SR 2.1',
    waiver: {
      rule: 'SL-write-from-lower',
      conduit: 'hmi-to-plc',
      rationale: 'interlocks',
      expires: '2027-06-30',
    },
    position: { line: 18, column: 9 },
  };
  const result: ValidationResult = {
    ok: false,
    errors: [{ ...EXAMPLE, file: 'w.yaml' }],
    warnings: [warning],
    lint: [
      risk,
      { ...risk, rule: 'SL-skip', severity: 'warning', waiver: undefined, cites: '62443-3-3 SR 5.1' },
    ],
    file: 'w.yaml',
  };

  it('prints errors, then the lint report with warnings and accepted risks, then a summary', () => {
    const lintError: Problem = {
      severity: 'error',
      code: 'lint.any-port',
      path: ['conduits', 'hmi-to-plc', 'flows', 1],
      message: 'tcp flow web allows any port [62443-3-3 SR 5.2 RE1]',
      file: 'w.yaml',
      position: { line: 30, column: 9 },
    };
    expect(formatReport({ ...result, errors: [lintError] })).toBe(
      [
        'w.yaml:30:9 conduits.hmi-to-plc.flows[1]: tcp flow web allows any port [62443-3-3 SR 5.2 RE1]',
        '',
        'Lint report (derived from IEC 62443):',
        '  warnings:',
        '    w.yaml:14:5 conduits.hmi-to-plc: conduit spans 2 SL steps [62443-3-3 SR 5.1]',
        '  accepted risks (waived):',
        '    w.yaml:18:9 conduits.hmi-to-plc.flows[0]: SL-write-from-lower: writes into SL 3 [62443-3-3 SR 2.1]',
        '      waived until 2027-06-30: interlocks',
        '',
        'invalid: 1 error, 1 warning, 1 accepted risk',
        '',
      ].join('\n'),
    );
    expect(formatReport({ ok: true, errors: [], warnings: [], lint: [] })).toBe(
      'valid: 0 errors, 0 warnings, 0 accepted risks\n',
    );
  });

  it('says the lint did not run while schema or semantic errors remain, and keeps other warnings apart', () => {
    const blocked: ValidationResult = {
      ok: false,
      errors: [{ ...EXAMPLE, file: 'w.yaml' }],
      warnings: [
        {
          severity: 'warning',
          code: 'semantic.cidr-host-bits',
          path: ['zones', 'control', 'networks', 0],
          message: 'host bits set',
          file: 'w.yaml',
          position: { line: 9, column: 3 },
        },
      ],
      lint: [],
      file: 'w.yaml',
    };
    expect(formatReport(blocked)).toBe(
      [
        'w.yaml:42:13 conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]: 99 is not a Modbus function code',
        '',
        'Warnings:',
        '  w.yaml:9:3 zones.control.networks[0]: host bits set',
        '',
        'Lint report: not run; fix the 1 error above first.',
        '',
        'invalid: 1 error, 1 warning, 0 accepted risks',
        '',
      ].join('\n'),
    );
  });

  it('gives errors, warnings and accepted risks as JSON', () => {
    expect(JSON.parse(JSON.stringify(reportJson(result)))).toEqual({
      valid: false,
      errors: [
        {
          severity: 'error',
          code: 'semantic.modbus-function',
          message: '99 is not a Modbus function code',
          path: 'conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]',
          file: 'w.yaml',
          line: 42,
          column: 13,
        },
      ],
      warnings: [
        {
          severity: 'warning',
          code: 'lint.SL-skip',
          message: 'conduit spans 2 SL steps [62443-3-3 SR 5.1]',
          path: 'conduits.hmi-to-plc',
          file: 'w.yaml',
          line: 14,
          column: 5,
          rule: 'SL-skip',
        },
      ],
      acceptedRisks: [
        {
          rule: 'SL-write-from-lower',
          severity: 'error',
          conduit: 'hmi-to-plc',
          flow: 'poll',
          message: 'writes into SL 3',
          cites: '62443-3-3 SR 2.1',
          path: 'conduits.hmi-to-plc.flows[0]',
          file: 'w.yaml',
          line: 18,
          column: 9,
          rationale: 'interlocks',
          expires: '2027-06-30',
        },
      ],
    });
  });

  it('reports the issue example: a warning and an accepted risk, with the rationale escaped', () => {
    const r = validatePolicyText(WATER, 'water-plant.yaml', { now: NOW });
    expect(r.ok).toBe(true);
    const text = formatReport(r);
    expect(text).toContain(
      '  warnings:\n    water-plant.yaml:15:5 conduits.hmi-to-plc: conduit hmi-to-plc spans 2 SL steps',
    );
    expect(text).toContain(
      '  accepted risks (waived):\n    water-plant.yaml:27:26 conduits.hmi-to-plc.flows[0].modbus.rules[1].functions: SL-write-from-lower: ',
    );
    expect(text).toContain(
      "      waived until 2027-06-30: Setpoint writes are bounded by the PLC's interlocks \\u001b[31m\n",
    );
    expect(text).not.toContain('\u001b');
    expect(text.endsWith('valid: 0 errors, 1 warning, 1 accepted risk\n')).toBe(true);
    const json = reportJson(r) as { valid: boolean; acceptedRisks: { rule: string; cites: string }[] };
    expect(json.valid).toBe(true);
    expect(json.acceptedRisks.map((a) => a.rule)).toEqual(['SL-write-from-lower']);
    expect(json.acceptedRisks[0]?.cites).toMatch(/^62443-3-3 SR/);
  });
});
