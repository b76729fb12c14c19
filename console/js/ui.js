// Shared UI pieces: toasts, chips, icons, empty/loading states, small dialogs.
import { h, s, pct, mode, DASH } from './util.js';
import { request } from './api.js';

export const STATUSES = {
	open: 'Open',
	booked: 'Booked',
	en_route: 'En route',
	on_site: 'On site',
	resolved: 'Resolved',
	closed: 'Closed',
	cancelled: 'Cancelled',
	triaged: 'Triaged',
};

export const KINDS = ['washer', 'fridge', 'car', 'camera', 'pump'];

export const OUTCOMES = {
	fault_confirmed: 'Fault confirmed',
	no_fault_found: 'No fault found',
	customer_declined: 'Customer declined',
};

let toastHost = null;
function host() {
	if (!toastHost) {
		toastHost = h('div.toasts', { role: 'status', 'aria-live': 'polite' });
		document.body.appendChild(toastHost);
	}
	return toastHost;
}

export function toast(message, kind = 'info', title = null) {
	const el = h('div', { class: ['toast', `toast-${kind}`] },
		h('div.toast-body', title ? h('strong', title) : null, h('span', message)),
		h('button.toast-x', { 'aria-label': 'Dismiss', onClick: () => el.remove() }, '×'),
	);
	host().appendChild(el);
	setTimeout(() => el.classList.add('toast-out'), kind === 'error' ? 8000 : 4000);
	setTimeout(() => el.remove(), kind === 'error' ? 8400 : 4400);
	return el;
}

/** Shows an API or other error as a toast; stays quiet for aborts and 401 (handled by sign-in). */
export function report(err, what) {
	if (!err || err.name === 'AbortError' || err.silent) return;
	if (err.status !== undefined) {
		const title = what || err.title || (err.status ? `Error ${err.status}` : 'Error');
		toast(err.detail || err.title || 'Request failed', 'error', title);
	} else {
		console.warn(err);
		toast('Something went wrong in the console.', 'error', what || 'Error');
	}
}

export function statusChip(status) {
	return h('span', { class: ['chip', 'st', `s-${status}`] }, STATUSES[status] || status || DASH);
}

export function prioChip(p) {
	if (!p) return null;
	return h('span', { class: ['prio', `p${p}`], title: `Priority ${p}` }, `P${p}`);
}

export function kindTag(kind) {
	return h('span', { class: ['tag', `tk-${kind}`] }, kind === 'proactive' ? 'Proactive' : kind === 'reactive' ? 'Reactive' : kind === 'incident' ? 'Incident' : kind);
}

export function chip(text, cls = '') {
	return h('span', { class: ['chip', cls] }, text);
}

export function riskLevel(p) {
	if (p == null) return 'none';
	if (p >= 0.6) return 'high';
	if (p >= 0.3) return 'mid';
	if (p >= 0.1) return 'low';
	return 'min';
}

/** Horizontal bar + percentage. */
export function riskBar(p, { above = false, wide = false } = {}) {
	const bar = h('span', { class: ['riskbar-fill', `rl-${riskLevel(p)}`] });
	bar.style.width = `${Math.max(0, Math.min(1, p || 0)) * 100}%`;
	return h('span', { class: ['riskbar', wide ? 'riskbar-wide' : ''], title: above ? 'Above the model threshold' : '' },
		h('span.riskbar-track', bar),
		h('span', { class: ['riskbar-pct', above ? 'above' : ''] }, p == null ? DASH : pct(p)),
	);
}

export function modeLabel(fm, withKind = false) {
	const m = mode(fm);
	return withKind && m.kind ? `${m.label} · ${m.kind}` : m.label;
}

export function check(confirmed) {
	return confirmed ? h('span.confirmed', { title: 'Confirmed by the customer' }, icon('check', 14), 'confirmed') : null;
}

export function loading(text = 'Loading…') {
	return h('div.state.state-loading', h('span.spinner'), text);
}

export function empty(text, sub) {
	return h('div.state.state-empty', h('div.state-title', text), sub ? h('div.state-sub', sub) : null);
}

export function failed(err, retry) {
	return h('div.state.state-error', h('div.state-title', 'Could not load'),
		h('div.state-sub', err?.detail || err?.message || 'Unknown error'),
		retry ? h('button.btn', { onClick: retry }, 'Try again') : null,
	);
}

const ICONS = {
	board: 'M5 4h14a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zM9 4v16M15 4v16',
	fleet: 'M22 12h-4l-3 9-6-18-3 9H2',
	tech: 'M8 8a4 4 0 1 0 8 0a4 4 0 1 0-8 0M4 21v-1a7 7 0 0 1 14 0v1',
	incident: 'M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0zM12 9v4M12 17h.01',
	reply: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z',
	model: 'M12 2 2 7l10 5 10-5zM2 17l10 5 10-5M2 12l10 5 10-5',
	kpi: 'M12 20V10M18 20V4M6 20v-4',
	check: 'M20 6 9 17l-5-5',
	x: 'M18 6 6 18M6 6l12 12',
	out: 'M9 21H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h4M16 17l5-5-5-5M21 12H9',
	back: 'M19 12H5M12 19l-7-7 7-7',
	left: 'M15 18l-6-6 6-6',
	right: 'M9 18l6-6-6-6',
	search: 'M4 11a7 7 0 1 0 14 0a7 7 0 1 0-14 0M21 21l-4.3-4.3',
	plus: 'M12 5v14M5 12h14',
	pin: 'M21 10c0 7-9 13-9 13s-9-6-9-13a9 9 0 0 1 18 0zM9 10a3 3 0 1 0 6 0a3 3 0 1 0-6 0',
	clock: 'M3 12a9 9 0 1 0 18 0a9 9 0 1 0-18 0M12 7v5l3 2',
	user: 'M8 8a4 4 0 1 0 8 0a4 4 0 1 0-8 0M4 21v-1a7 7 0 0 1 14 0v1',
	alert: 'M3 12a9 9 0 1 0 18 0a9 9 0 1 0-18 0M12 8v4M12 16h.01',
};

export function icon(name, size = 18) {
	return s('svg.icon', { width: size, height: size, viewBox: '0 0 24 24', 'aria-hidden': 'true' }, s('path', { d: ICONS[name] || '' }));
}

/**
 * modal({title, body: Node, actions: [{label, kind, onClick(close) → Promise|void}]})
 * Returns {close}. Escape / backdrop closes.
 */
export function modal({ title, body, actions = [] }) {
	const prevFocus = document.activeElement;
	const close = () => {
		document.removeEventListener('keydown', onKey);
		back.remove();
		prevFocus?.focus?.();
	};
	const onKey = (e) => {
		if (e.key === 'Escape') close();
	};
	const btns = actions.map((a) => {
		const b = h('button', { class: ['btn', a.kind ? `btn-${a.kind}` : ''], type: a.submit ? 'submit' : 'button', 'data-action': a.action || null }, a.label);
		if (!a.submit) {
			b.addEventListener('click', async () => {
				if (!a.onClick) return close();
				b.disabled = true;
				try {
					await a.onClick(close);
				} finally {
					b.disabled = false;
				}
			});
		}
		return b;
	});
	const submitAction = actions.find((a) => a.submit);
	const form = h('form', {
		class: 'modal',
		role: 'dialog',
		'aria-modal': 'true',
		'aria-label': title,
		onSubmit: async (e) => {
			e.preventDefault();
			if (!submitAction) return;
			const b = btns[actions.indexOf(submitAction)];
			b.disabled = true;
			try {
				await submitAction.onClick(close);
			} finally {
				b.disabled = false;
			}
		},
	},
		h('div.modal-head', h('h2', title), h('button.icon-btn', { 'aria-label': 'Close', onClick: close }, icon('x'))),
		h('div.modal-body', body),
		actions.length ? h('div.modal-actions', btns) : null,
	);
	const back = h('div.modal-back', { onMousedown: (e) => e.target === back && close() }, form);
	document.body.appendChild(back);
	document.addEventListener('keydown', onKey);
	const first = form.querySelector('input, select, textarea') || btns[btns.length - 1];
	first?.focus();
	return { close };
}

export function field(label, control, hint) {
	return h('label.field', h('span.field-label', label), control, hint ? h('span.field-hint', hint) : null);
}

/** Segmented control: options [{value, label}] */
export function segmented(options, value, onChange, label) {
	const wrap = h('div.seg', { role: 'group', 'aria-label': label || null });
	const render = (v) => {
		for (const b of wrap.children) b.classList.toggle('on', b.dataset.value === String(v));
	};
	for (const o of options) {
		wrap.appendChild(
			h('button', {
				'data-value': String(o.value),
				onClick: () => {
					render(o.value);
					onChange(o.value);
				},
			}, o.label),
		);
	}
	render(value);
	return wrap;
}

/** A KPI-style tile: label, big value, hint; opts {key, cls, extra}. */
export function tile(label, value, hint, o = {}) {
	return h('div', { class: ['tile', o.cls], 'data-kpi': o.key }, h('div.tile-label', label), h('div', { class: ['tile-value', value === DASH ? 'tile-null' : ''] }, value), o.extra, hint ? h('div.tile-hint', hint) : null);
}

/** Label over value. */
export function fact(label, value) {
	return h('div.fact', h('div.fact-label', label), h('div.fact-value', value));
}

/** Key/value grid. rows: [[label, value|Node], ...] */
export function facts(rows, cls = '') {
	return h('dl', { class: ['facts', cls] },
		rows.filter(Boolean).map(([k, v]) => [h('dt', k), h('dd', v == null || v === '' ? DASH : v)]),
	);
}

/**
 * Cursor paging for a list view: paged({path, query(), signal, view, state(node), draw(items, moreButton)})
 * → {load(), get items, set(items)}. view gets aria-busy while the first page loads.
 */
export function paged({ path, query, signal, view, state, draw }) {
	let items = [];
	let cursor = null;
	let seq = 0;
	const redraw = () => draw(items, cursor ? h('button.btn', { 'data-action': 'load-more', onClick: more }, 'Load more') : null);
	const page = (cur) => request(path, { query: { ...query(), cursor: cur }, signal });
	async function load(quiet) {
		const my = ++seq;
		quiet = quiet === true;
		if (!quiet) {
			view.setAttribute('aria-busy', 'true');
			if (!items.length) state(loading());
			else view.classList.add('dim');
		}
		try {
			const r = await page(null);
			if (my !== seq) return;
			items = r.items || [];
			cursor = r.next_cursor || null;
			redraw();
		} catch (e) {
			if (e.name === 'AbortError' || my !== seq) return;
			if (quiet) report(e, 'Could not refresh');
			else state(failed(e, load));
		} finally {
			if (my === seq) {
				view.classList.remove('dim');
				view.setAttribute('aria-busy', 'false');
			}
		}
	}
	async function more(ev) {
		const my = seq;
		const btn = ev.currentTarget;
		btn.disabled = true;
		try {
			const r = await page(cursor);
			if (my !== seq) return;
			items = items.concat(r.items || []);
			cursor = r.next_cursor || null;
			redraw();
		} catch (e) {
			btn.disabled = false;
			report(e, 'Could not load more');
		}
	}
	return {
		load,
		get items() {
			return items;
		},
		set(v) {
			items = v;
			redraw();
		},
	};
}
