// The forewarn API client: bearer key from sessionStorage, problem+json errors.
import { qs } from './util.js';

const KEY = 'forewarn.apiKey';
const BASE = '/api/v1';

let unauthorizedHandler = () => {};

export function getKey() {
	try {
		return sessionStorage.getItem(KEY) || '';
	} catch {
		return '';
	}
}

export function setKey(k) {
	sessionStorage.setItem(KEY, k);
}

export function clearKey() {
	sessionStorage.removeItem(KEY);
}

export function onUnauthorized(fn) {
	unauthorizedHandler = fn;
}

export class ApiError extends Error {
	constructor(status, problem) {
		const p = problem || {};
		super(p.detail || p.title || `Request failed (${status})`);
		this.name = 'ApiError';
		this.status = status;
		this.title = p.title || null;
		this.detail = p.detail || null;
		this.field = p.field || null;
		this.type = p.type || null;
	}
}

export function authHeaders(extra) {
	return { Authorization: `Bearer ${getKey()}`, ...extra };
}

/**
 * request('/tickets', {query: {status: 'open'}}) → parsed JSON.
 * Throws ApiError (with the problem's detail) on non-2xx answers.
 * A 401 also calls the unauthorized handler (back to sign-in) unless opts.noAuthRedirect.
 */
export async function request(path, opts = {}) {
	const { method = 'GET', body, query, signal, noAuthRedirect = false } = opts;
	const headers = authHeaders({ Accept: 'application/json' });
	if (body !== undefined) headers['Content-Type'] = 'application/json';
	let res;
	try {
		res = await fetch(BASE + path + qs(query), {
			method,
			headers,
			body: body !== undefined ? JSON.stringify(body) : undefined,
			signal,
			cache: 'no-store',
		});
	} catch (e) {
		if (e && e.name === 'AbortError') throw e;
		const err = new ApiError(0, { title: 'Network error', detail: 'Cannot reach the forewarn server.' });
		throw err;
	}
	if (res.status === 204) return null;
	const ctype = res.headers.get('Content-Type') || '';
	let payload = null;
	if (ctype.includes('json')) {
		try {
			payload = await res.json();
		} catch {
			payload = null;
		}
	} else {
		try {
			await res.text();
		} catch {
			/* ignore */
		}
	}
	if (!res.ok) {
		const err = new ApiError(res.status, payload && typeof payload === 'object' ? payload : { title: res.statusText });
		if (res.status === 401) {
			err.silent = !noAuthRedirect;
			if (!noAuthRedirect) unauthorizedHandler();
		}
		throw err;
	}
	return payload;
}

/** Follows next_cursor until `max` items are gathered (or the list ends). */
export async function getAll(path, query, { max = 1000, signal } = {}) {
	const items = [];
	let cursor = null;
	for (;;) {
		const page = await request(path, { query: { ...query, cursor }, signal });
		items.push(...(page.items || []));
		cursor = page.next_cursor;
		if (!cursor || items.length >= max) break;
	}
	return items;
}

/** Path segment escaping. */
export const seg = (v) => encodeURIComponent(String(v));
