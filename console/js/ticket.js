// The ticket drawer: detail, timeline, bookings, outreach, replies; booking and transitions.
import { h, replace, clear, rel, dateTime, slot, pct, num, humanize, mode, factorText, debounce, DASH } from './util.js';
import { emit, on } from './bus.js';
import { request, seg } from './api.js';
import { statusChip, prioChip, kindTag, chip, icon, report, toast, loading, failed, facts, field, OUTCOMES, STATUSES, check } from './ui.js';

let st = null; // {id, back, drawer, body, actions, panel, panelFor, detail, unsubs, ctl}

export function closeTicket() {
	if (!st) return;
	st.ctl.abort();
	st.unsubs.forEach((u) => u());
	document.removeEventListener('keydown', st.onKey);
	st.back.remove();
	st.drawer.remove();
	const prev = st.prevFocus;
	st = null;
	prev?.focus?.();
}

export function openTicket(id) {
	if (st && st.id === id) return;
	const prevFocus = st ? st.prevFocus : document.activeElement;
	closeTicket();
	const ctl = new AbortController();
	const body = h('div.drawer-body', loading('Loading ticket…'));
	const titleEl = h('h2.drawer-title', `Ticket #${id}`);
	const drawer = h('aside.drawer', { role: 'dialog', 'aria-label': `Ticket ${id}`, 'data-drawer-ticket': id },
		h('div.drawer-head', titleEl, h('button.icon-btn', { 'aria-label': 'Close', 'data-action': 'close-drawer', onClick: closeTicket }, icon('x'))),
		body,
	);
	const back = h('div.drawer-back', { onClick: closeTicket });
	const onKey = (e) => {
		if (e.key === 'Escape' && !document.querySelector('.modal-back')) closeTicket();
	};
	document.addEventListener('keydown', onKey);
	document.body.append(back, drawer);
	requestAnimationFrame(() => drawer.classList.add('open'));
	st = { id, back, drawer, body, titleEl, detail: null, panel: null, panelFor: null, unsubs: [], ctl, onKey, prevFocus };
	const refetch = debounce(() => load(false), 400);
	st.unsubs.push(
		on('stream:ticket', (d) => d && Number(d.id) === Number(id) && refetch()),
		on('stream:booking', (d) => d && Number(d.ticket_id) === Number(id) && refetch()),
		on('stream:reconnected', () => refetch()),
		() => refetch.cancel(),
	);
	load(true);
	drawer.focus?.();
}

async function load(first) {
	const cur = st;
	if (!cur) return;
	try {
		const d = await request(`/tickets/${seg(cur.id)}`, { signal: cur.ctl.signal });
		if (st !== cur) return;
		render(d);
	} catch (e) {
		if (st !== cur || e.name === 'AbortError') return;
		if (first) replace(cur.body, failed(e, () => load(true)));
		else report(e, 'Could not refresh the ticket');
	}
}

function applyDetail(d) {
	render(d);
	emit('ticket:changed', d);
}

function render(d) {
	const cur = st;
	const prevStatus = cur.detail?.status;
	cur.detail = d;
	const m = mode(d.failure_mode);
	cur.titleEl.textContent = `Ticket #${d.id}`;

	const head = h('div.tk-head', h('div.tk-chips', statusChip(d.status), prioChip(d.priority), kindTag(d.kind), d.confirmed ? check(true) : null),
		h('div.tk-title', h('a', { href: `#/devices/${encodeURIComponent(d.device)}`, class: 'tk-device', onClick: () => closeTicket() }, d.device), h('span.muted', ` · ${d.device_kind || m.kind}`)),
		h('div.tk-mode', m.label, d.occurrences > 1 ? h('span.muted', ` · seen ${d.occurrences}×`) : null),
	);

	if (!cur.panel || prevStatus !== d.status) {
		cur.panel = h('div.tk-panel');
		cur.panel.hidden = true;
	}
	const actions = actionBar(d);

	const rows = [
		['Opened', when(d.opened_at)],
		d.due_at ? ['Due', when(d.due_at)] : null,
		d.expected_failure_at ? ['Expected failure', when(d.expected_failure_at)] : null,
		d.risk_at_opening != null ? ['Risk at opening', pct(d.risk_at_opening)] : null,
		['Customer', d.customer || DASH],
		d.incident_id ? ['Incident', h('a', { href: '#/incidents', onClick: () => closeTicket() }, `#${d.incident_id}`)] : null,
		['Technician', d.technician_name ? `${d.technician_name} (${d.technician})` : d.technician || 'Not assigned'],
		['Visit', d.slot_start ? h('span', slot(d.slot_start, d.slot_end), h('span.muted', ` · ${rel(d.slot_start)}`)) : DASH],
		d.outcome ? ['Outcome', OUTCOMES[d.outcome] || humanize(d.outcome)] : null,
		['Updated', when(d.updated_at)],
	];

	const sections = [
		section('Details', facts(rows)),
		d.top_factors && d.top_factors.length ? section('Why the model flagged it', h('ul.factors', d.top_factors.map((f) => h('li', factorText(f))))) : null,
		section(`Timeline`, timeline(d.events || []), (d.events || []).length),
		section('Bookings', bookings(d.bookings || []), (d.bookings || []).length),
		section('Customer messages', outreach(d.outreach || []), (d.outreach || []).length),
		section('Replies', repliesList(d.replies || []), (d.replies || []).length),
	];
	replace(cur.body, head, actions, cur.panel, sections);
}

function when(t) {
	if (!t) return DASH;
	return h('span', { title: dateTime(t) }, dateTime(t), h('span.muted', ` · ${rel(t)}`));
}

function section(title, content, count) {
	return h('section.tk-section', h('h3', title, count !== undefined ? h('span.count', String(count)) : null), content);
}

// what a dispatcher can do next; the first is the primary action
const NEXT = { open: ['book', 'cancelled'], booked: ['en_route', 'cancelled'], en_route: ['on_site', 'cancelled'], on_site: ['resolved', 'cancelled'], resolved: ['closed'] };

const LABEL = { book: 'Book visit', en_route: 'Mark en route', on_site: 'Mark on site', resolved: 'Resolve…', closed: 'Close ticket', cancelled: 'Cancel ticket…' };

function actionBar(d) {
	const next = NEXT[d.status] || [];
	if (!next.length) return h('div.tk-actions.tk-actions-none.muted', `This ticket is ${STATUSES[d.status]?.toLowerCase() || d.status}; no further actions.`);
	return h('div.tk-actions', next.map((a, i) => h('button', {
		class: ['btn', a === 'cancelled' ? 'btn-ghost-danger' : i === 0 ? 'btn-primary' : ''],
		'data-action': a === 'book' ? 'book' : `to-${a}`,
		onClick: (e) => act(a, e.currentTarget),
	}, a === 'book' ? icon('clock', 16) : null, LABEL[a])));
}

function act(a, btn) {
	if (a === 'book') return showOptions();
	if (a === 'resolved') return showResolve();
	if (a === 'cancelled') return showCancel();
	return transition({ to: a }, btn);
}

function openPanel(...children) {
	const p = st.panel;
	replace(p, ...children);
	p.hidden = false;
	return p;
}

function closePanel() {
	if (!st) return;
	clear(st.panel);
	st.panel.hidden = true;
}

async function showOptions() {
	const cur = st;
	const id = cur.id;
	openPanel(loading('Finding free slots…'));
	try {
		const res = await request(`/tickets/${seg(id)}/options`, { query: { limit: 3 }, signal: cur.ctl.signal });
		if (st !== cur) return;
		const items = (res.items || []).slice(0, 3);
		if (!items.length) {
			openPanel(h('div.panel-head', h('strong', 'No free slot'), closeX()), h('p.muted', 'The planner found no technician with a free slot for this ticket right now.'));
			return;
		}
		const option = (o, i) => h('button', {
			class: ['option', i === 0 ? 'best' : ''],
			'data-action': 'choose-slot',
			'data-technician': o.technician,
			'data-start': o.start,
			onClick: (e) => book(o, e.currentTarget),
		},
			h('span.option-when', slot(o.start, o.end)),
			h('span.option-who', icon('user', 14), o.technician_name || o.technician),
			h('span.option-rel.muted', rel(o.start), i === 0 ? ' · best' : ''),
		);
		openPanel(h('div.panel-head', h('strong', 'Pick a slot'), h('span.muted', ' — the planner\'s best options now'), closeX()), h('div.options', items.map(option)));
	} catch (e) {
		if (e.name === 'AbortError') return;
		closePanel();
		report(e, 'Could not load slots');
	}
}

function closeX() {
	return h('button.icon-btn.sm', { 'aria-label': 'Close', onClick: closePanel }, icon('x', 16));
}

async function book(o, btn) {
	const cur = st;
	for (const b of cur.panel.querySelectorAll('button')) b.disabled = true;
	btn.classList.add('busy');
	try {
		const d = await request(`/tickets/${seg(cur.id)}/book`, { method: 'POST', body: { technician: o.technician, start: o.start }, signal: cur.ctl.signal });
		if (st !== cur) return;
		closePanel();
		applyDetail(d);
		toast(`${o.technician_name || o.technician}, ${slot(o.start, o.end)}`, 'success', `Ticket #${cur.id} booked`);
	} catch (e) {
		if (e.name === 'AbortError') return;
		report(e, e.status === 409 ? 'Slot no longer free' : 'Booking failed');
		if (st === cur) showOptions();
	}
}

function showResolve() {
	const outcome = h('select', { required: true, name: 'outcome' }, h('option', { value: '' }, 'Choose outcome…'), Object.entries(OUTCOMES).map(([v, l]) => h('option', { value: v }, l)));
	const component = h('input', { type: 'text', name: 'component', placeholder: mode(st.detail.failure_mode).component || 'component' });
	const action = h('input', { type: 'text', name: 'action', placeholder: 'e.g. replaced bearing' });
	const reason = h('input', { type: 'text', name: 'reason', placeholder: 'Optional note' });
	const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-action': 'confirm-resolve' }, 'Resolve ticket');
	openPanel(
		h('div.panel-head', h('strong', 'Resolve'), closeX()),
		h('form', {
			class: 'panel-form',
			onSubmit: (e) => {
				e.preventDefault();
				if (!outcome.value) return outcome.focus();
				const body = { to: 'resolved', outcome: outcome.value };
				if (component.value.trim()) body.component = component.value.trim();
				if (action.value.trim()) body.action = action.value.trim();
				if (reason.value.trim()) body.reason = reason.value.trim();
				transition(body, submit);
			},
		},
			h('div.form-grid', field('Outcome', outcome), field('Component', component), field('Action taken', action), field('Note', reason)),
			h('div.panel-actions', submit),
		),
	);
	outcome.focus();
}

function showCancel() {
	const reason = h('input', { type: 'text', name: 'reason', placeholder: 'Why is it cancelled?' });
	const submit = h('button', { type: 'submit', class: 'btn btn-danger', 'data-action': 'confirm-cancel' }, 'Cancel ticket');
	openPanel(
		h('div.panel-head', h('strong', 'Cancel this ticket?'), closeX()),
		h('form', {
			class: 'panel-form',
			onSubmit: (e) => {
				e.preventDefault();
				const body = { to: 'cancelled' };
				if (reason.value.trim()) body.reason = reason.value.trim();
				transition(body, submit);
			},
		},
			field('Reason', reason),
			h('div.panel-actions', h('button.btn', { onClick: closePanel }, 'Keep ticket'), submit),
		),
	);
	reason.focus();
}

async function transition(body, btn) {
	const cur = st;
	if (btn) btn.disabled = true;
	try {
		const d = await request(`/tickets/${seg(cur.id)}/transitions`, { method: 'POST', body, signal: cur.ctl.signal });
		if (st !== cur) return;
		closePanel();
		applyDetail(d);
		toast(`Now ${STATUSES[d.status]?.toLowerCase() || d.status}.`, 'success', `Ticket #${cur.id}`);
	} catch (e) {
		if (e.name !== 'AbortError') report(e, 'Could not update the ticket');
	} finally {
		if (btn) btn.disabled = false;
	}
}

function timeline(events) {
	if (!events.length) return h('p.muted.small', 'No events yet.');
	const item = (e) => {
		const line = h('div.tl-line', e.from_status ? [statusChip(e.from_status), h('span.tl-arrow', '→')] : null, statusChip(e.to_status), h('span.tl-actor.muted', e.actor ? ` by ${e.actor}` : ''));
		return h('li', { class: `s-${e.to_status}` },
			h('span.tl-dot'),
			h('div.tl-main', line, e.reason ? h('div.tl-reason', e.reason) : null),
			h('time.tl-time.muted', { datetime: e.at, title: dateTime(e.at) }, rel(e.at)),
		);
	};
	return h('ol.timeline', [...events].sort((a, b) => new Date(b.at) - new Date(a.at)).map(item));
}

function bookings(list) {
	if (!list.length) return h('p.muted.small', 'Not booked yet.');
	const state = (b) =>
		b.cancelled_at ? chip(`cancelled ${rel(b.cancelled_at)}`, 'chip-muted')
		: b.confirmed_at ? chip('confirmed', 'chip-ok')
		: b.proposed_at ? chip(`proposed ${rel(b.proposed_at)}`, 'chip-info')
		: chip('not proposed yet', 'chip-muted');
	const item = (b) => h('li', { class: ['row', b.cancelled_at ? 'row-dim' : ''] },
		h('div.row-main', h('strong', b.technician_name || b.technician), h('span.muted', ` · ${slot(b.start, b.end)}`)),
		h('div.row-side', state(b)),
	);
	return h('ul.rows', list.map(item));
}

const MSG_STATUS = { sent: 'chip-ok', delivered: 'chip-ok', failed: 'chip-bad', dead: 'chip-bad', pending: 'chip-info', queued: 'chip-info', held: 'chip-muted' };

function outreach(list) {
	if (!list.length) return h('p.muted.small', 'No messages to the customer yet.');
	const item = (o) => {
		const when = o.sent_at ? `sent ${rel(o.sent_at)}` : `created ${rel(o.created_at)}`;
		const meta = `${humanize(o.message_type)} · ${o.channel} · ${String(o.language || '').toUpperCase()} · ${when}${o.attempts > 1 ? ` · ${num(o.attempts)} attempts` : ''}`;
		return h('li.row',
			h('div.row-main', h('strong', o.subject || humanize(o.message_type)), h('div.muted.small', meta), o.last_error ? h('div.err.small', o.last_error) : null),
			h('div.row-side', chip(humanize(o.status), MSG_STATUS[o.status] || '')),
		);
	};
	return h('ul.rows', list.map(item));
}

function repliesList(list) {
	if (!list.length) return h('p.muted.small', 'No replies from the customer.');
	const item = (r) => h('li',
		h('div.reply-meta', h('strong', r.sender), h('span.muted', ` · ${r.channel} · ${rel(r.received_at)}`), chip(r.answered_at ? 'answered' : 'waiting', r.answered_at ? 'chip-ok' : 'chip-warn')),
		h('blockquote', r.body),
	);
	return h('ul.replies-mini', list.map(item));
}
