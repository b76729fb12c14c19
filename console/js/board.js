// Board: tickets by status, live.
import { h, replace, rel, slot, shortSlot, dateTime, pct, mode, debounce, humanize } from './util.js';
import { on } from './bus.js';
import { request, getAll, seg } from './api.js';
import { prioChip, kindTag, icon, report, toast, loading, failed, segmented, modal, field, OUTCOMES } from './ui.js';

const COLUMNS = [
	{ status: 'open', label: 'Open' },
	{ status: 'booked', label: 'Booked' },
	{ status: 'en_route', label: 'En route' },
	{ status: 'on_site', label: 'On site' },
	{ status: 'resolved', label: 'Resolved', sub: 'recent' },
];
const ACTIVE = ['open', 'booked', 'en_route', 'on_site'];
const RESOLVED_KEEP = 20;

let filter = { kind: 'all', q: '' }; // survives navigation within the session

export function mount(root, ctx) {
	const tickets = new Map();
	const flash = new Set();
	let loaded = false;
	let lastLoad = null;

	const search = h('input', {
		type: 'search',
		class: 'input input-search',
		placeholder: 'Device, #ticket, technician',
		'aria-label': 'Filter cards',
		value: filter.q,
		onInput: debounce((e) => {
			filter.q = e.target.value.trim().toLowerCase();
			draw();
		}, 150),
	});
	ctx.header(
		'Board',
		'',
		segmented(
			[
				{ value: 'all', label: 'All' },
				{ value: 'proactive', label: 'Proactive' },
				{ value: 'reactive', label: 'Reactive' },
				{ value: 'incident', label: 'Incident' },
			],
			filter.kind,
			(v) => {
				filter.kind = v;
				draw();
			},
			'Ticket kind',
		),
		h('div.search-wrap', icon('search', 16), search),
		h('button.btn.btn-primary', { 'data-action': 'new-ticket', onClick: () => newTicket(ctx) }, icon('plus', 16), 'New ticket'),
	);

	const cols = {};
	const boardEl = h('div.board', { 'data-view': 'board', 'aria-busy': 'true' },
		COLUMNS.map((c) => {
			const count = h('span.col-count', '0');
			const list = h('div.col-list');
			cols[c.status] = { count, list };
			return h('section', { class: ['col', `s-${c.status}`], 'data-status': c.status, 'aria-label': c.label },
				h('header.col-head', h('span.col-dot'), h('span.col-title', c.label), c.sub ? h('span.col-sub', c.sub) : null, count),
				list,
			);
		}),
	);
	const wrap = h('div.board-wrap', boardEl);
	replace(root, wrap);
	cols.open.list.appendChild(loading());

	async function load() {
		try {
			const [active, resolved] = await Promise.all([
				getAll('/tickets', { status: ACTIVE.join(','), limit: 500 }, { max: 2000, signal: ctx.signal }),
				request('/tickets', { query: { status: 'resolved', limit: RESOLVED_KEEP }, signal: ctx.signal }),
			]);
			tickets.clear();
			for (const t of active) tickets.set(t.id, t);
			for (const t of resolved.items || []) tickets.set(t.id, t);
			loaded = true;
			lastLoad = Date.now();
			draw();
			boardEl.setAttribute('aria-busy', 'false');
		} catch (e) {
			if (e.name === 'AbortError') return;
			if (!loaded) replace(cols.open.list, failed(e, load));
			else report(e, 'Could not refresh the board');
		}
	}

	function upsert(t) {
		if (!t || t.id === undefined) return;
		const prev = tickets.get(t.id);
		if (t.status === 'closed' || t.status === 'cancelled') tickets.delete(t.id);
		else tickets.set(t.id, t);
		if (!prev || prev.status !== t.status || prev.slot_start !== t.slot_start || prev.confirmed !== t.confirmed) flash.add(t.id);
		// keep only the most recent resolved tickets
		const res = [...tickets.values()].filter((x) => x.status === 'resolved').sort(byUpdatedDesc);
		for (const x of res.slice(RESOLVED_KEEP)) tickets.delete(x.id);
	}

	function matches(t) {
		if (filter.kind !== 'all' && t.kind !== filter.kind) return false;
		if (!filter.q) return true;
		const q = filter.q.replace(/^#/, '');
		return (
			String(t.id) === q ||
			(t.device || '').toLowerCase().includes(q) ||
			(t.technician_name || '').toLowerCase().includes(q) ||
			(t.technician || '').toLowerCase().includes(q) ||
			(t.failure_mode || '').toLowerCase().includes(q)
		);
	}

	function draw() {
		if (!loaded) return;
		const by = Object.fromEntries(COLUMNS.map((c) => [c.status, []]));
		let total = 0;
		for (const t of tickets.values()) {
			if (!by[t.status]) continue;
			if (ACTIVE.includes(t.status)) total++;
			if (matches(t)) by[t.status].push(t);
		}
		by.open.sort(byUrgency);
		for (const s of ['booked', 'en_route', 'on_site']) by[s].sort(bySlot);
		by.resolved.sort(byUpdatedDesc);
		for (const c of COLUMNS) {
			const list = by[c.status];
			cols[c.status].count.textContent = String(list.length);
			replace(cols[c.status].list, list.length ? list.map((t) => card(t, flash.has(t.id))) : h('div.col-empty', filter.q || filter.kind !== 'all' ? 'No matching tickets' : 'Nothing here'));
		}
		flash.clear();
		ctx.setSub(`${total} active ticket${total === 1 ? '' : 's'} · updated ${rel(lastLoad)}`);
	}

	function card(t, isNew) {
		const m = mode(t.failure_mode);
		const el = h('article', {
			class: ['card', `card-p${t.priority}`, isNew ? 'flash' : ''],
			tabindex: '0',
			role: 'button',
			'aria-label': `Ticket ${t.id}, ${t.device}, ${m.label}`,
			'data-ticket-id': t.id,
			'data-kind': t.kind,
			'data-device': t.device,
			'data-priority': t.priority,
			onClick: () => ctx.openTicket(t.id),
			onKeydown: (e) => {
				if (e.key === 'Enter' || e.key === ' ') {
					e.preventDefault();
					ctx.openTicket(t.id);
				}
			},
		},
			h('div.card-top', prioChip(t.priority), kindTag(t.kind), h('span.card-id', `#${t.id}`)),
			h('div.card-device', h('strong', t.device), h('span.muted', t.device_kind ? ` ${t.device_kind}` : '')),
			h('div.card-mode', m.label),
			detailLine(t),
			h('div.card-foot', h('span', { title: dateTime(t.opened_at) }, `opened ${rel(t.opened_at)}`)),
		);
		return el;
	}

	function detailLine(t) {
		if (t.status === 'open') {
			const bits = [];
			if (t.risk_at_opening != null) bits.push(h('span.risk-mini', `risk ${pct(t.risk_at_opening)}`));
			if (t.expected_failure_at) bits.push(h('span', { title: 'Expected failure' }, `fails ${rel(t.expected_failure_at)}`));
			else if (t.due_at) bits.push(h('span', `due ${rel(t.due_at)}`));
			return bits.length ? h('div.card-line', bits.flatMap((b, i) => (i ? [h('span.sep', '·'), b] : [b]))) : null;
		}
		if (t.status === 'resolved') {
			return h('div.card-line', h('span', { class: ['outcome', `oc-${t.outcome}`] }, OUTCOMES[t.outcome] || humanize(t.outcome || 'resolved')), h('span.sep', '·'), h('span', rel(t.updated_at)));
		}
		return h('div.card-tech', h('div.card-who', icon('user', 13), t.technician_name || t.technician || 'Unassigned'),
			t.slot_start
				? h('div.card-when', icon('clock', 13), h('span.card-slot', { title: slot(t.slot_start, t.slot_end) }, shortSlot(t.slot_start, t.slot_end)), t.confirmed ? h('span.tick', { title: 'Confirmed by the customer', 'aria-label': 'confirmed' }, icon('check', 14)) : null)
				: null,
		);
	}

	const pending = new Set();
	const flush = debounce(async () => {
		const ids = [...pending];
		pending.clear();
		const results = await Promise.allSettled(ids.map((id) => request(`/tickets/${seg(id)}`, { signal: ctx.signal })));
		results.forEach((r, i) => {
			if (r.status === 'fulfilled') upsert(r.value);
			else if (r.reason?.status === 404) tickets.delete(ids[i]);
			else if (r.reason?.name !== 'AbortError') report(r.reason, 'Live update failed');
		});
		lastLoad = Date.now();
		draw();
	}, 300);
	const queue = (id) => {
		if (id == null) return;
		pending.add(Number(id));
		flush();
	};
	const unsubs = [
		on('stream:ticket', (d) => queue(d?.id)),
		on('stream:booking', (d) => queue(d?.ticket_id)),
		on('stream:reconnected', () => load()),
		on('ticket:changed', (t) => {
			upsert(t);
			draw();
		}),
	];
	const tick = setInterval(() => loaded && draw(), 60_000); // keep relative times fresh

	load();
	return () => {
		unsubs.forEach((u) => u());
		flush.cancel();
		clearInterval(tick);
	};
}

function byUrgency(a, b) {
	return (
		a.priority - b.priority ||
		timeOr(a.expected_failure_at ?? a.due_at, Infinity) - timeOr(b.expected_failure_at ?? b.due_at, Infinity) ||
		timeOr(a.opened_at, 0) - timeOr(b.opened_at, 0)
	);
}
function bySlot(a, b) {
	return timeOr(a.slot_start, Infinity) - timeOr(b.slot_start, Infinity) || a.priority - b.priority;
}
function byUpdatedDesc(a, b) {
	return timeOr(b.updated_at, 0) - timeOr(a.updated_at, 0);
}
function timeOr(t, d) {
	const v = t ? Date.parse(t) : NaN;
	return Number.isNaN(v) ? d : v;
}

function newTicket(ctx) {
	const device = h('input', { type: 'text', required: true, placeholder: 'e.g. WM-00012', autocomplete: 'off', name: 'device' });
	const component = h('input', { type: 'text', placeholder: 'e.g. drum_bearing', name: 'component' });
	const priority = h('select', { name: 'priority' }, [1, 2, 3, 4].map((p) => h('option', { value: p, selected: p === 2 }, `P${p}${p === 1 ? ' — most urgent' : p === 4 ? ' — low' : ''}`)));
	const note = h('textarea', { required: true, rows: 3, placeholder: 'What did the customer report?', name: 'note' });
	modal({
		title: 'New reactive ticket',
		body: h('div.form-grid', field('Device', device), field('Component', component, 'Leave empty if unknown'), field('Priority', priority), h('div.span2', field('Note', note))),
		actions: [
			{ label: 'Cancel' },
			{
				label: 'Open ticket',
				kind: 'primary',
				submit: true,
				onClick: async (close) => {
					const body = { device: device.value.trim(), priority: Number(priority.value), note: note.value.trim() };
					if (component.value.trim()) body.component = component.value.trim();
					try {
						const r = await request('/tickets', { method: 'POST', body });
						close();
						toast(r.merged ? `Merged into the open ticket #${r.ticket_id} for this fault.` : `Ticket #${r.ticket_id} opened.`, 'success', r.merged ? 'Merged' : 'Ticket opened');
						ctx.openTicket(r.ticket_id);
					} catch (e) {
						report(e, 'Could not open the ticket');
					}
				},
			},
		],
	});
}
