// Live updates: GET /api/v1/stream read with fetch() and a ReadableStream (EventSource
// cannot send the Authorization header). SSE lines are parsed here; the connection is
// re-opened with exponential backoff, and dropped if it goes silent.
import { authHeaders } from './api.js';
import { sleep } from './util.js';

const SILENCE_MS = 90_000; // no bytes (not even a keep-alive) for this long: reconnect
const MIN_DELAY = 1_000;
const MAX_DELAY = 30_000;

/**
 * startStream({onEvent(type, data), onStatus('connecting'|'live'|'offline'), onUnauthorized()})
 * → {stop()}
 */
export function startStream({ onEvent, onStatus, onUnauthorized }) {
	const stopper = new AbortController();
	let delay = MIN_DELAY;
	let current = null;

	async function connectOnce() {
		current = new AbortController();
		const ctl = current;
		const onStop = () => ctl.abort();
		stopper.signal.addEventListener('abort', onStop, { once: true });
		let watchdog = null;
		const touch = () => {
			clearTimeout(watchdog);
			watchdog = setTimeout(() => ctl.abort(), SILENCE_MS);
		};
		try {
			onStatus('connecting');
			touch();
			const res = await fetch('/api/v1/stream', {
				headers: authHeaders({ Accept: 'text/event-stream' }),
				signal: ctl.signal,
				cache: 'no-store',
			});
			if (res.status === 401) {
				onUnauthorized();
				return 'stop';
			}
			if (!res.ok || !res.body) return 'retry';
			onStatus('live');
			delay = MIN_DELAY;
			await readEvents(res.body, touch, onEvent);
			return 'retry';
		} catch {
			return 'retry';
		} finally {
			clearTimeout(watchdog);
			stopper.signal.removeEventListener('abort', onStop);
		}
	}

	(async () => {
		while (!stopper.signal.aborted) {
			const r = await connectOnce();
			if (r === 'stop' || stopper.signal.aborted) break;
			onStatus('offline');
			const jitter = Math.random() * 0.3 * delay;
			await sleep(delay + jitter, stopper.signal);
			delay = Math.min(delay * 2, MAX_DELAY);
		}
	})();

	return {
		stop() {
			stopper.abort();
			current?.abort();
		},
	};
}

async function readEvents(body, touch, onEvent) {
	const reader = body.pipeThrough(new TextDecoderStream()).getReader();
	let buf = '';
	let type = '';
	let data = [];
	const line = (raw) => {
		const l = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
		if (l === '') {
			if (data.length) {
				const text = data.join('\n');
				let parsed = text;
				try {
					parsed = JSON.parse(text);
				} catch {
					/* leave as text */
				}
				try {
					onEvent(type || 'message', parsed);
				} catch (e) {
					console.warn('stream handler failed', e);
				}
			}
			type = '';
			data = [];
			return;
		}
		if (l.startsWith(':')) return; // comment / keep-alive
		const i = l.indexOf(':');
		const field = i < 0 ? l : l.slice(0, i);
		let value = i < 0 ? '' : l.slice(i + 1);
		if (value.startsWith(' ')) value = value.slice(1);
		if (field === 'event') type = value;
		else if (field === 'data') data.push(value);
		// id / retry: not needed
	};
	for (;;) {
		const { value, done } = await reader.read();
		if (done) break;
		touch();
		buf += value;
		let nl;
		while ((nl = buf.indexOf('\n')) >= 0) {
			line(buf.slice(0, nl));
			buf = buf.slice(nl + 1);
		}
	}
}
