// Incidents: many devices failing the same way at once, with status chips and counts.
import { h, replace, rel, dateTime, num, mode } from './util.js';
import { on } from './bus.js';
import { empty, statusChip, segmented, paged } from './ui.js';

const state = { status: '' };
const COLS = 7;

export function mount(root, ctx) {
	const statuses = ['', 'open', 'triaged', 'resolved'].map((v) => ({ value: v, label: v ? v[0].toUpperCase() + v.slice(1) : 'All' }));
	ctx.header('Incidents', '', segmented(statuses, state.status, (v) => { state.status = v; list.load(); }, 'Status'));
	const tbody = h('tbody');
	const more = h('div.table-more');
	const th = (t, c) => h(c ? `th.${c}` : 'th', t);
	const view = h('div.panel.panel-table', { 'data-view': 'incidents', 'aria-busy': 'true' },
		h('table.table', h('thead', h('tr', th('Incident'), th('Failure mode'), th('Status'), th('Opened'), th('Devices', 'c-num'), th('Tickets', 'c-num'), th('Area'))), tbody),
		more,
	);
	replace(root, view);
	const cell = (node) => h('tr', h('td', { colspan: COLS }, node));

	function row(i) {
		const m = mode(i.failure_mode);
		const area = i.center_latitude != null ? `${num(i.center_latitude, 3)}, ${num(i.center_longitude, 3)}${i.radius_km ? ` · r ${num(i.radius_km, 1)} km` : ''}` : '—';
		return h('tr', { 'data-incident-id': i.id },
			h('td', h('strong', `#${i.id}`)),
			h('td', m.label, h('div.muted.small', m.kind)),
			h('td', statusChip(i.status)),
			h('td', rel(i.opened_at), h('div.muted.small', dateTime(i.opened_at))),
			h('td.c-num', h('span.big-num', num(i.device_count))),
			h('td.c-num', num(i.tickets)),
			h('td.muted.small', area),
		);
	}

	const list = paged({
		path: '/incidents',
		query: () => ({ status: state.status, limit: 50 }),
		signal: ctx.signal,
		view,
		state: (node) => replace(tbody, cell(node)),
		draw(items, btn) {
			replace(tbody, items.length ? items.map(row) : cell(empty(state.status ? `No ${state.status} incidents` : 'No incidents', 'An incident groups many devices failing the same way at once.')));
			replace(more, btn);
			const open = items.filter((i) => i.status === 'open').length;
			ctx.setSub(`${items.length}${btn ? '+' : ''} shown${open ? ` · ${open} open` : ''}`);
		},
	});
	const off = on('stream:reconnected', list.load);
	list.load();
	return off;
}
