/**
 * Stage 1 "load": policy text → plain data plus a source map (path → line:column).
 *
 * Why the `yaml` package: it keeps a node tree with source ranges for every key and value (so every problem
 * can point at file:line:column), implements YAML 1.2's core schema (no 1.1 surprises such as `no` → false,
 * `2027-06-30` → Date or `010` → octal), reports duplicate keys as errors and limits alias expansion.
 * JSON is a subset of YAML 1.2, so the same parser reads `.json` policies with the same positions.
 */
import { readFile } from 'node:fs/promises';
import { LineCounter, isAlias, isMap, isPair, isScalar, isSeq, parseDocument, visit } from 'yaml';
import type { Document, Node } from 'yaml';
import type { DocPath, Problem, SourcePosition } from './types.ts';

export interface PolicyDocument {
  file: string;
  text: string;
  data: unknown;
  /** Position of the value at `path`; undefined when the path does not exist in the source. */
  locate(path: DocPath): SourcePosition | undefined;
  /**
   * Position of the key naming the last segment of `path` (for "unknown field" and the like); falls back to
   * locate(path). Optional so that documents built elsewhere (e.g. from an API body) need not provide it.
   */
  locateKey?(path: DocPath): SourcePosition | undefined;
}

export type LoadResult = { ok: true; doc: PolicyDocument } | { ok: false; problems: Problem[] };

/** Bounds alias expansion (`&a` / `*a` "billion laughs"); a real policy uses few or no aliases. */
const MAX_ALIAS_COUNT = 100;

type AnyDoc = Document.Parsed;

function positionOf(lc: LineCounter, offset: number): SourcePosition {
  const p = lc.linePos(offset);
  // linePos reports line 0 before the first newline was counted; the first line is line 1.
  return { line: Math.max(p.line, 1), column: Math.max(p.col, 1) };
}

function nodeStart(node: unknown): number | undefined {
  if (isAlias(node) || isScalar(node) || isMap(node) || isSeq(node)) {
    const r = (node as Node).range;
    return r ? r[0] : undefined;
  }
  return undefined;
}

/** The key node and value node at `seg` inside `node` (a map or sequence), following aliases. */
function child(
  doc: AnyDoc,
  node: unknown,
  seg: string | number,
): { key?: unknown; value: unknown; found: boolean } {
  let n = node;
  if (isAlias(n)) n = n.resolve(doc);
  if (isMap(n)) {
    for (const pair of n.items) {
      if (!isPair(pair)) continue;
      const k = pair.key;
      const keyText = isScalar(k) ? String(k.value) : k === null ? '' : String(k);
      if (keyText === String(seg)) return { key: k, value: pair.value, found: true };
    }
    return { value: undefined, found: false };
  }
  if (isSeq(n) && typeof seg === 'number') {
    if (seg >= 0 && seg < n.items.length) return { value: n.items[seg], found: true };
  }
  return { value: undefined, found: false };
}

function makeDocument(
  file: string,
  text: string,
  data: unknown,
  doc: AnyDoc,
  lc: LineCounter,
): PolicyDocument {
  /** Walks the path; returns the last key node and value node, or undefined if a segment is missing. */
  const walk = (path: DocPath): { key?: unknown; value: unknown } | undefined => {
    let node: unknown = doc.contents;
    let key: unknown;
    for (const seg of path) {
      const c = child(doc, node, seg);
      if (!c.found) return undefined;
      key = c.key;
      node = c.value;
    }
    return { key, value: node };
  };
  const locate = (path: DocPath): SourcePosition | undefined => {
    const w = walk(path);
    if (w === undefined) return undefined;
    // An empty value (`port:`) has no node or an empty scalar: point at its key instead.
    const valueStart = nodeStart(w.value);
    const isEmpty = isScalar(w.value) && w.value.value === null && w.value.source === '';
    const start = valueStart !== undefined && !isEmpty ? valueStart : nodeStart(w.key);
    if (start !== undefined) return positionOf(lc, start);
    return path.length === 0 ? { line: 1, column: 1 } : undefined;
  };
  const locateKey = (path: DocPath): SourcePosition | undefined => {
    const w = walk(path);
    if (w === undefined) return undefined;
    const start = nodeStart(w.key);
    return start !== undefined ? positionOf(lc, start) : locate(path);
  };
  return { file, text, data, locate, locateKey };
}

function syntaxProblem(
  file: string,
  lc: LineCounter,
  code: string,
  message: string,
  offset: number,
): Problem {
  return { severity: 'error', code, path: [], message, file, position: positionOf(lc, offset) };
}

/**
 * Keys the data cannot hold faithfully: repeats of an earlier key of the same mapping (compared as toJS does,
 * by text) and non-scalar keys (`? [a]`), which toJS would silently stringify.
 */
function findBadKeys(doc: AnyDoc): { offset: number; code: string; message: string }[] {
  const out: { offset: number; code: string; message: string }[] = [];
  visit(doc, {
    Map(_key, map) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        const k: unknown = pair.key;
        const start = nodeStart(k);
        if (k !== null && !isScalar(k)) {
          if (start !== undefined)
            out.push({ offset: start, code: 'load.syntax', message: 'keys must be plain text' });
          continue;
        }
        const text = isScalar(k) ? String(k.value) : '';
        if (seen.has(text) && start !== undefined) {
          out.push({
            offset: start,
            code: 'load.duplicate-key',
            message: 'duplicate key (each key may appear once)',
          });
        }
        seen.add(text);
      }
    },
  });
  return out;
}

/** Source order (line, then column) of problems; problems without a position come first. */
export function byPosition(a: Problem, b: Problem): number {
  return (
    (a.position?.line ?? 0) - (b.position?.line ?? 0) || (a.position?.column ?? 0) - (b.position?.column ?? 0)
  );
}

/** Parses YAML or JSON policy text. Never throws on bad input; every syntax error is returned. */
export function parsePolicyText(text: string, file: string): LoadResult {
  if (typeof text !== 'string') {
    return {
      ok: false,
      problems: [{ severity: 'error', code: 'load.read', path: [], message: 'not text', file }],
    };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lc,
    prettyErrors: false, // our own file:line:column format; no code frame inside messages
    // Duplicate keys are errors (the second value would otherwise silently win), but the parser's own check
    // compares every pair of keys, O(n²): 5,000 assets took half a second. findBadKeys is linear.
    uniqueKeys: false,
    version: '1.2',
    schema: 'core',
    merge: false,
    strict: true,
  });
  const problems: Problem[] = [];
  for (const e of doc.errors) {
    const code = e.code === 'DUPLICATE_KEY' ? 'load.duplicate-key' : 'load.syntax';
    const message = e.code === 'DUPLICATE_KEY' ? 'duplicate key (each key may appear once)' : e.message;
    problems.push(syntaxProblem(file, lc, code, message, e.pos[0]));
  }
  // Warnings are unresolved tags and the like: in a firewall policy anything the parser had to guess at
  // is refused rather than interpreted.
  for (const w of doc.warnings) {
    problems.push(syntaxProblem(file, lc, 'load.syntax', w.message, w.pos[0]));
  }
  if (doc.errors.length === 0) {
    for (const bad of findBadKeys(doc))
      problems.push(syntaxProblem(file, lc, bad.code, bad.message, bad.offset));
  }
  if (problems.length > 0) return { ok: false, problems: problems.sort(byPosition) };
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return {
      ok: false,
      problems: [
        {
          severity: 'error',
          code: 'load.aliases',
          path: [],
          message,
          file,
          position: { line: 1, column: 1 },
        },
      ],
    };
  }
  return { ok: true, doc: makeDocument(file, text, data === undefined ? null : data, doc, lc) };
}

/** Reads and parses a policy file; an unreadable file gives a `load.read` problem. */
export async function loadPolicyFile(path: string): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
    const reason =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EACCES' || code === 'EPERM'
          ? 'permission denied'
          : code === 'EISDIR'
            ? 'is a directory'
            : err instanceof Error
              ? err.message
              : String(err);
    return {
      ok: false,
      problems: [
        {
          severity: 'error',
          code: 'load.read',
          path: [],
          message: `cannot read policy file: ${reason}`,
          file: path,
        },
      ],
    };
  }
  return parsePolicyText(text, path);
}
