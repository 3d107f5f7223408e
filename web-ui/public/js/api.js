/* global fetch, window */
// The pages use only the JSON API. State-changing requests carry the session's CSRF token in a header.

/**
 * Shapes of the API's answers (see /api/openapi.json), for the pages' JSDoc.
 * @typedef {{ name: string, securityLevel: number, description: string, networks: string[] }} Zone
 * @typedef {{ name: string, protocol: string }} Flow
 * @typedef {{ name: string, from: string, to: string, mode: string, flows: Flow[] }} Conduit
 * @typedef {{ versionId: number | null, zones: Zone[], conduits: Conduit[] }} Topology
 * @typedef {{ conduit: string, flow: string, state: string }} ProxyState
 * @typedef {{ id: number, hash: string, when: string, who: string, comment: string | null }} VersionRef
 * @typedef {{ versionId: number, deadline: string, previousVersionId: number | null }} Pending
 * @typedef {{ mode: string, version: VersionRef | null, pending: Pending | null, proxies?: ProxyState[],
 *   conduitDrops?: Record<string, number>, log?: { stored: number } }} DaemonStatus
 * @typedef {{ start: number, end: number, bucketMs: number, counts: number[], truncated: boolean }} Timeline
 * @typedef {{ id: number, time: number, src: string, dst: string, srcPort?: number, dstPort?: number,
 *   protocol: string, verdict: string, reason: string, source: string, conduit?: string | null,
 *   flow?: string, fromZone?: string, toZone?: string, count: number,
 *   detail?: Record<string, string | number | undefined> }} BlockedEvent
 * @typedef {{ op: ' ' | '+' | '-', text: string }} DiffLine
 * @typedef {{ code: string, message: string, severity?: string, position?: { line: number, column: number } }} Problem
 * @typedef {{ id: number, when: string, who: string, status: string, comment?: string | null }} VersionInfo
 * @typedef {{ message?: string, error?: string, problems?: Problem[] } | null} ErrorBody
 */

/** @type {{ user: string, role: string, csrf: string } | null} */
export let session = null;

/** @param {{ user: string, role: string, csrf: string } | null} s */
export function setSession(s) {
  session = s;
}

export class ApiError extends Error {
  /** @param {number} status @param {ErrorBody} body */
  constructor(status, body) {
    super(body && typeof body.message === 'string' ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * @param {string} method
 * @param {string} url
 * @param {unknown} [body]
 * @param {{ poll?: boolean }} [opts] poll: a background refresh, not the person acting; the server does
 *   not restart the idle timer for it, so an open tab still times out.
 * @template T the answer's shape (one of the typedefs above); the caller knows which route it asked
 * @returns {Promise<T>}
 */
export async function api(method, url, body, opts = {}) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
  if (opts.poll === true) headers['X-Sluice-Poll'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session !== null) headers['X-CSRF-Token'] = session.csrf;
  const res = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin',
  });
  const text = await res.text();
  let data;
  try {
    data = text === '' ? null : JSON.parse(text);
  } catch {
    data = { message: text };
  }
  if (res.status === 401 && url !== '/api/login' && session !== null) {
    // Session expired (idle timeout) or ended elsewhere: back to the login page.
    session = null;
    window.dispatchEvent(new window.CustomEvent('sluice:logged-out'));
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** @param {string} role @param {string[]} roles */
export function can(role, roles) {
  return roles.includes(role);
}

/** Whether the signed-in user may change policies (the API's policy-writing roles). */
export function canEditPolicy() {
  return session !== null && can(session.role, ['admin', 'integrator']);
}

/** What to show the person for a failed call. @param {unknown} err */
export function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}
