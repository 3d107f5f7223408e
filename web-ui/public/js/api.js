/* global fetch, window */
// The pages use only the JSON API. State-changing requests carry the session's CSRF token in a header.

/** @type {{ user: string, role: string, csrf: string } | null} */
export let session = null;

/** @param {{ user: string, role: string, csrf: string } | null} s */
export function setSession(s) {
  session = s;
}

export class ApiError extends Error {
  /** @param {number} status @param {any} body */
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
 * @returns {Promise<any>}
 */
export async function api(method, url, body) {
  /** @type {Record<string, string>} */
  const headers = { Accept: 'application/json' };
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
