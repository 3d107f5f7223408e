/**
 * Human and machine output of validation: `file:line:column path: message` lines, the lint report, and the
 * JSON of `sluice validate --json`.
 *
 * Policy text is hostile input as far as a terminal is concerned: every user string shown is escaped (control
 * characters, ANSI escapes, bidi overrides), so a description or rationale cannot rewrite the operator's screen.
 */
import type { ValidationResult } from './validate.ts';
import type { DocPath, LintFinding, Problem } from './types.ts';

// eslint-disable-next-line no-control-regex -- matching control characters is the point: they get escaped
const UNSAFE_RE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** Escapes characters that could move the cursor, recolour, or reorder a terminal line. */
export function sanitize(text: string): string {
  return text.replace(UNSAFE_RE, (ch) => {
    if (ch === '\n') return '\\n';
    if (ch === '\t') return '\\t';
    return `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

const QUOTE_MAX = 80;

/** A user value inside a message: `'text'`, escaped and shortened. */
export function quote(value: unknown): string {
  if (typeof value !== 'string') return sanitize(String(value));
  const chars = [...value];
  const short = chars.length > QUOTE_MAX ? `${chars.slice(0, QUOTE_MAX).join('')}…` : value;
  return `'${sanitize(short).replace(/'/g, "\\'")}'`;
}

/** `conduits.hmi-to-plc.flows[0].modbus`; keys that are not plain words are written `["…"]`. */
export function formatPath(path: DocPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${sanitize(JSON.stringify(seg))}]`;
  }
  return out;
}

function location(file: string | undefined, pos: { line: number; column: number } | undefined): string {
  const f = file === undefined ? '' : sanitize(file);
  return pos === undefined ? f : `${f}:${pos.line}:${pos.column}`;
}

function line(loc: string, path: DocPath, message: string): string {
  const p = formatPath(path);
  const head = [loc, p].filter((s) => s !== '').join(' ');
  return head === '' ? sanitize(message) : `${head}: ${sanitize(message)}`;
}

/** `water-plant.yaml:42:13 conduits.hmi-to-plc.flows[0].modbus.rules[1].functions[0]: 99 is not a Modbus function code` */
export function formatProblem(p: Problem): string {
  return line(location(p.file, p.position), p.path, p.message);
}

function fileOf(r: ValidationResult): string | undefined {
  return r.file ?? [...r.errors, ...r.warnings].find((p) => p.file !== undefined)?.file;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function acceptedRisks(r: ValidationResult): LintFinding[] {
  return r.lint.filter((f) => f.waiver !== undefined);
}

/**
 * The report `sluice validate` prints: errors first, then the lint report (warnings, then accepted risks with
 * the waiver's rationale and expiry), each lint line citing the IEC 62443 requirement it derives from, then a
 * one-line summary.
 */
export function formatReport(r: ValidationResult): string {
  const out: string[] = [];
  for (const p of r.errors) out.push(formatProblem(p));
  const risks = acceptedRisks(r);
  const file = fileOf(r);
  const isLint = (p: Problem) => p.code.startsWith('lint.');
  const otherWarnings = r.warnings.filter((p) => !isLint(p));
  const lintWarnings = r.warnings.filter(isLint);
  // The lint needs a policy that passed the schema and semantic checks; say so rather than look clean.
  const blocking = r.errors.filter((p) => !isLint(p)).length;
  if (otherWarnings.length > 0) {
    if (out.length > 0) out.push('');
    out.push('Warnings:');
    for (const p of otherWarnings) out.push(`  ${formatProblem(p)}`);
  }
  if (blocking > 0) {
    if (out.length > 0) out.push('');
    out.push(`Lint report: not run; fix the ${plural(blocking, 'error')} above first.`);
  } else if (lintWarnings.length > 0 || risks.length > 0) {
    if (out.length > 0) out.push('');
    out.push('Lint report (derived from IEC 62443):');
    if (lintWarnings.length > 0) {
      out.push('  warnings:');
      for (const p of lintWarnings) out.push(`    ${formatProblem(p)}`);
    }
    if (risks.length > 0) {
      out.push('  accepted risks (waived):');
      for (const f of risks) {
        const w = f.waiver;
        out.push(`    ${line(location(file, f.position), f.path, `${f.rule}: ${f.message} [${f.cites}]`)}`);
        if (w !== undefined) out.push(`      waived until ${sanitize(w.expires)}: ${sanitize(w.rationale)}`);
      }
    }
  }
  const summary = `${plural(r.errors.length, 'error')}, ${plural(r.warnings.length, 'warning')}, ${plural(risks.length, 'accepted risk')}`;
  if (out.length > 0) out.push('');
  out.push(`${r.ok ? 'valid' : 'invalid'}: ${summary}`);
  return `${out.join('\n')}\n`;
}

interface JsonProblem {
  severity: 'error' | 'warning';
  code: string;
  message: string;
  path: string;
  file?: string;
  line?: number;
  column?: number;
  rule?: string;
  cites?: string;
}

function problemJson(p: Problem, r: ValidationResult): JsonProblem {
  const o: JsonProblem = { severity: p.severity, code: p.code, message: p.message, path: formatPath(p.path) };
  if (p.file !== undefined) o.file = p.file;
  if (p.position) {
    o.line = p.position.line;
    o.column = p.position.column;
  }
  if (p.code.startsWith('lint.')) {
    const rule = p.code.slice('lint.'.length);
    const f = r.lint.find((x) => x.rule === rule && formatPath(x.path) === o.path && x.waiver === undefined);
    o.rule = rule;
    if (f) o.cites = f.cites;
  }
  return o;
}

/** `sluice validate --json`: `{ valid, errors, warnings, acceptedRisks }`, plain JSON (paths as text). */
export function reportJson(r: ValidationResult): object {
  const file = fileOf(r);
  return {
    valid: r.ok,
    errors: r.errors.map((p) => problemJson(p, r)),
    warnings: r.warnings.map((p) => problemJson(p, r)),
    acceptedRisks: acceptedRisks(r).map((f) => ({
      rule: f.rule,
      severity: f.severity,
      ...(f.conduit !== undefined ? { conduit: f.conduit } : {}),
      ...(f.flow !== undefined ? { flow: f.flow } : {}),
      message: f.message,
      cites: f.cites,
      path: formatPath(f.path),
      ...(file !== undefined ? { file } : {}),
      ...(f.position ? { line: f.position.line, column: f.position.column } : {}),
      rationale: f.waiver?.rationale ?? '',
      expires: f.waiver?.expires ?? '',
    })),
  };
}
