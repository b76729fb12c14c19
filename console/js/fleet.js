// Fleet risk: devices sorted by current risk, filterable, paged by cursor.
import { h, replace, rel, dateTime, debounce, throttle, humanize } from './util.js';
import { on } from './bus.js';
import { icon, empty, riskBar, modeLabel, chip, KINDS, paged } from './ui.js';

const PAGE = 50;
const state = { sort: 'risk', kind: '', minRisk: '', q: '' }; // kept across visits

const SORTS = {
	external_id: 'Device',
	risk: 'Risk',
	last_seen: 'Last seen',
};

export function mount(root, ctx) {
	const kindSel = h('select.input', { 'aria-label': 'Kind', onChange: (e) => { state.kind = e.target.value; reload(); } },
		h('option', { value: '' }, 'All kinds'),
		KINDS.map((k) => h('option', { value: k, selected: state.kind === k }, humanize(k))),
	);
	const riskSel = h('select.input', { 'aria-label': 'Minimum risk', onChange: (e) => { state.minRisk = e.target.value; reload(); } },
		[['', 'Any risk'], ['0.1', 'Risk ≥ 10 %'], ['0.25', 'Risk ≥ 25 %'], ['0.5', 'Risk ≥ 50 %'], ['0.75', 'Risk ≥ 75 %']].map(([v, l]) => h('option', { value: v, selected: state.minRisk === v }, l)),
	);
	const search = h('input', {
		type: 'search',
		class: 'input input-search',
		placeholder: 'Device id prefix',
		'aria-label': 'Search device id',
		value: state.q,
		onInput: debounce((e) => {
			state.q = e.target.value.trim();
			reload();
		}, 250),
	});
	ctx.header('Fleet risk', '', kindSel, riskSel, h('div.search-wrap', icon('search', 16), search));

	const thead = h('thead');
	const tbody = h('tbody');
	const more = h('div.table-more');
	const table = h('table.table.table-click', thead, tbody);
	const view = h('div.panel.panel-table', { 'data-view': 'fleet', 'aria-busy': 'true' }, table, more);
	replace(root, view);

	function header() {
		const th = (key, label, cls) =>
			h('th', { class: [cls, key ? 'sortable' : '', state.sort === key ? 'sorted' : ''], 'aria-sort': state.sort === key ? (key === 'external_id' ? 'ascending' : 'descending') : null },
				key
					? h('button.th-btn', { 'data-sort': key, onClick: () => { state.sort = key; reload(); } }, label, h('span.sort-ind', state.sort === key ? (key === 'external_id' ? '▲' : '▼') : '↕'))
					: label,
			);
		replace(thead, h('tr', th('external_id', 'Device', 'c-dev'), th(null, 'Kind', 'c-kind'), th(null, 'Customer', 'c-cust'), th('risk', 'Highest risk', 'c-risk'), th(null, 'Open tickets', 'c-num'), th('last_seen', 'Last seen', 'c-seen')));
	}

	function row(d) {
		const r = d.risk;
		const open = () => ctx.navigate(`#/devices/${encodeURIComponent(d.external_id)}`);
		return h('tr', { tabindex: '0', 'data-device': d.external_id, onClick: open, onKeydown: (e) => e.key === 'Enter' && open() },
			h('td.c-dev', h('a', { href: `#/devices/${encodeURIComponent(d.external_id)}`, class: 'strong-link' }, d.external_id), h('div.muted.small', d.model || '')),
			h('td.c-kind', h('span', { class: ['kind-dot', `kd-${d.kind}`] }), humanize(d.kind)),
			h('td.c-cust', d.customer || h('span.muted', '—')),
			h('td.c-risk', r ? [riskBar(r.probability, { above: r.above_threshold }), h('div.muted.small', modeLabel(r.failure_mode), r.above_threshold ? h('span.flag-above', ' · above threshold') : null)] : h('span.muted', 'not scored')),
			h('td.c-num', d.open_tickets ? chip(String(d.open_tickets), 'chip-info') : h('span.muted', '0')),
			h('td.c-seen', h('span', { class: ['online-dot', d.online === true ? 'on' : d.online === false ? 'off' : 'unk'], title: d.online === true ? 'Online' : d.online === false ? 'Offline' : 'Unknown' }),
				h('span', { title: dateTime(d.last_seen_at) }, d.last_seen_at ? rel(d.last_seen_at) : 'never'),
				d.stale_since ? chip(`stale ${rel(d.stale_since).replace(' ago', '')}`, 'chip-warn') : null,
			),
		);
	}

	let limit = PAGE;
	const fleet = paged({
		path: '/devices',
		query: () => ({ sort: state.sort, kind: state.kind, min_risk: state.minRisk, q: state.q, limit }),
		signal: ctx.signal,
		view,
		state: (node) => replace(tbody, h('tr', h('td', { colspan: 6 }, node))),
		draw(rows, btn) {
			replace(tbody, rows.length ? rows.map(row) : h('tr', h('td', { colspan: 6 }, empty('No devices match', 'Try another kind, a lower minimum risk or a shorter id prefix.'))));
			replace(more, btn || (rows.length ? h('span.muted.small', 'End of list') : null));
			ctx.setSub(`${rows.length}${btn ? '+' : ''} device${rows.length === 1 ? '' : 's'} · sorted by ${SORTS[state.sort].toLowerCase()}`);
		},
	});
	function reload() {
		header();
		limit = PAGE;
		fleet.load();
	}

	// new predictions: refresh what is shown, at most every 10 s
	const refresh = throttle(() => {
		limit = Math.min(500, Math.max(PAGE, fleet.items.length));
		fleet.load(true);
	}, 10_000);
	const unsubs = [on('stream:prediction', refresh), on('stream:reconnected', refresh)];

	reload();
	return () => {
		unsubs.forEach((u) => u());
		refresh.cancel();
	};
}
