// forewarn dispatcher console: shell, sign-in, hash routing, live stream.
import { h, s, replace, clear } from '/console/js/util.js';
import { emit } from '/console/js/bus.js';
import { getKey, setKey, clearKey, onUnauthorized, request, ApiError } from '/console/js/api.js';
import { startStream } from '/console/js/stream.js';
import { icon, report } from '/console/js/ui.js';
import { openTicket, closeTicket } from '/console/js/ticket.js';
import * as board from '/console/js/board.js';
import * as fleet from '/console/js/fleet.js';
import * as device from '/console/js/device.js';
import * as technicians from '/console/js/technicians.js';
import * as incidents from '/console/js/incidents.js';
import * as replies from '/console/js/replies.js';
import * as models from '/console/js/models.js';
import * as kpis from '/console/js/kpis.js';

const NAV = [
	{ id: 'board', label: 'Board', icon: 'board' },
	{ id: 'fleet', label: 'Fleet risk', icon: 'fleet' },
	{ id: 'technicians', label: 'Technicians', icon: 'tech' },
	{ id: 'incidents', label: 'Incidents', icon: 'incident' },
	{ id: 'replies', label: 'Replies', icon: 'reply' },
	{ id: 'models', label: 'Models', icon: 'model' },
	{ id: 'kpis', label: 'KPIs', icon: 'kpi' },
];

const ROUTES = {
	board: board,
	fleet: fleet,
	devices: device,
	technicians: technicians,
	incidents: incidents,
	replies: replies,
	models: models,
	kpis: kpis,
};

const app = document.getElementById('app');
let shell = null;
let stream = null;
let view = null; // {cleanup, controller}

function showSignIn(message) {
	stopStream();
	for (const t of document.querySelectorAll('.toast')) t.remove();
	unmountView();
	closeTicket();
	shell = null;
	document.title = 'Sign in · forewarn';
	const input = h('input', {
		id: 'signin-key',
		type: 'password',
		autocomplete: 'off',
		spellcheck: 'false',
		placeholder: 'Paste your API key',
		'aria-label': 'API key',
		required: true,
	});
	const err = h('div.signin-error', { role: 'alert' }, message || '');
	err.hidden = !message;
	const btn = h('button.btn.btn-primary.btn-block', { type: 'submit', 'data-action': 'sign-in' }, 'Sign in');
	const form = h('form', {
		class: 'signin-card',
		onSubmit: async (e) => {
			e.preventDefault();
			const key = input.value.trim();
			if (!key) return;
			btn.disabled = true;
			btn.textContent = 'Checking…';
			err.hidden = true;
			setKey(key);
			try {
				await request('/tickets', { query: { limit: 1 }, noAuthRedirect: true });
				startApp();
			} catch (ex) {
				clearKey();
				err.textContent =
					ex instanceof ApiError && ex.status === 401
						? 'This key was not accepted. Check that it is complete and not revoked.'
						: ex instanceof ApiError && ex.status === 403
							? 'This key has no dispatcher access.'
							: ex.detail || ex.message || 'Sign-in failed.';
				err.hidden = false;
				btn.disabled = false;
				btn.textContent = 'Sign in';
				input.select();
			}
		},
	},
		h('div.brand.brand-lg', logo(), h('span', 'forewarn')),
		h('h1', 'Dispatcher console'),
		h('p.muted', 'Sign in with an API key issued by your administrator (forewarn keys create). The key stays in this browser tab only.'),
		h('label.field', h('span.field-label', 'API key'), input),
		err,
		btn,
	);
	replace(app, h('div.signin', form));
	input.focus();
}

function logo() {
	return s('svg.logo', { viewBox: '0 0 24 24', 'aria-hidden': 'true' }, s('path', { d: 'M3 17l5-6 4 4 8-10' }), s('circle', { cx: 20, cy: 5, r: 2.2 }));
}

function signOut() {
	clearKey();
	showSignIn();
}

onUnauthorized(() => {
	clearKey();
	showSignIn('Your session ended: the key was not accepted (401). Sign in again.');
});

function buildShell() {
	const nav = h('nav.nav', { 'aria-label': 'Main' },
		NAV.map((n) => h('a', { href: `#/${n.id}`, class: 'nav-item', 'data-nav': n.id }, icon(n.icon), h('span', n.label))),
	);
	const live = h('div.live', { 'data-live': 'connecting', title: 'Live updates' }, h('span.live-dot'), h('span.live-text', 'Connecting…'));
	const title = h('h1.page-title');
	const sub = h('div.page-sub');
	const actions = h('div.page-actions');
	const content = h('main.content', { id: 'content' });
	const signout = h('button.nav-item.signout', { 'data-action': 'sign-out', onClick: signOut }, icon('out'), h('span', 'Sign out'));
	const side = h('aside.sidebar', h('div.brand', logo(), h('span', 'forewarn')), nav, h('div.sidebar-foot', live, signout));
	const root = h('div.shell', side, h('div.main', h('header.topbar', h('div.titles', title, sub), actions), content));
	replace(app, root);
	return { root, nav, live, title, sub, actions, content };
}

function setLive(state) {
	if (!shell) return;
	shell.live.dataset.live = state;
	shell.live.querySelector('.live-text').textContent = state === 'live' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Offline — retrying';
}

function startStreamOnce() {
	stopStream();
	let wasLive = false;
	stream = startStream({
		// resync: changes were missed; views read again
		onEvent: (type, data) => emit(type === 'resync' ? 'stream:reconnected' : `stream:${type}`, data),
		onStatus: (st) => {
			setLive(st);
			if (st === 'live') {
				// after a reconnect, views refetch what they may have missed
				if (wasLive) emit('stream:reconnected');
				wasLive = true;
			}
		},
		onUnauthorized: () => {
			clearKey();
			showSignIn('Your session ended: the key was not accepted (401). Sign in again.');
		},
	});
}

function stopStream() {
	stream?.stop();
	stream = null;
}

function startApp() {
	shell = buildShell();
	startStreamOnce();
	if (!location.hash || location.hash === '#' || location.hash === '#/') {
		history.replaceState(null, '', '#/board');
	}
	route();
}

function parseHash() {
	const raw = location.hash.replace(/^#\/?/, '');
	const [path] = raw.split('?');
	const parts = path.split('/').filter(Boolean).map((p) => {
		try {
			return decodeURIComponent(p);
		} catch {
			return p;
		}
	});
	return parts.length ? parts : ['board'];
}

function unmountView() {
	if (!view) return;
	view.controller.abort();
	try {
		view.cleanup?.();
	} catch (e) {
		console.warn(e);
	}
	view = null;
}

function route() {
	if (!shell) return;
	const parts = parseHash();
	let name = parts[0];
	if (!ROUTES[name]) name = 'board';
	const mod = ROUTES[name];
	unmountView();
	const navId = name === 'devices' ? 'fleet' : name;
	for (const a of shell.nav.querySelectorAll('.nav-item')) a.classList.toggle('active', a.dataset.nav === navId);
	clear(shell.content);
	clear(shell.actions);
	shell.sub.textContent = '';
	shell.content.scrollTop = 0;
	const controller = new AbortController();
	const ctx = {
		params: parts.slice(1),
		signal: controller.signal,
		header(title, sub, ...actions) {
			shell.title.textContent = title;
			shell.sub.textContent = sub || '';
			replace(shell.actions, ...actions);
			document.title = `${title} · forewarn`;
		},
		setSub(text) {
			if (view && view.controller === controller) shell.sub.textContent = text || '';
		},
		openTicket,
		navigate(hash) {
			location.hash = hash;
		},
	};
	view = { controller, cleanup: null };
	try {
		view.cleanup = mod.mount(shell.content, ctx) || null;
	} catch (e) {
		report(e);
	}
}

window.addEventListener('hashchange', () => {
	if (getKey()) route();
});

window.addEventListener('unhandledrejection', (e) => {
	const r = e.reason;
	if (r && (r.name === 'AbortError' || r.silent)) {
		e.preventDefault();
		return;
	}
	if (r instanceof ApiError) {
		e.preventDefault();
		report(r);
	}
});

if (getKey()) startApp();
else showSignIn();

