// Models: list of trained models per failure mode; a model card; activate / roll back.
import { h, replace, rel, dateTime, dateOnly, dateRange, pct, num, hours, humanize, mode, DASH } from './util.js';
import { request, seg } from './api.js';
import { loading, failed, empty, chip, report, toast, modal, icon, tile, fact } from './ui.js';

export function mount(root, ctx) {
	if (ctx.params.length >= 3) return cardView(root, ctx, ctx.params[0], `${ctx.params[1]}/${ctx.params.slice(2).join('/')}`);
	return listView(root, ctx);
}

function cardHref(m) {
	const fm = mode(m.failure_mode);
	return `#/models/${encodeURIComponent(m.version)}/${encodeURIComponent(fm.kind)}/${encodeURIComponent(fm.component)}`;
}

function listView(root, ctx) {
	ctx.header('Models', '');
	const tbody = h('tbody', h('tr', h('td', { colspan: 9 }, loading())));
	const view = h('div.panel.panel-table', { 'data-view': 'models', 'aria-busy': 'true' },
		h('table.table.table-click', h('thead', h('tr', ['Failure mode', 'Version', 'Algorithm', 'Horizon', 'Threshold', 'Precision', 'Recall', 'Trained', 'Training data'].map((t, i) => h('th', { class: i >= 3 && i <= 6 ? 'c-num' : '' }, t)))),
			tbody,
		),
	);
	replace(root, view);
	(async () => {
		try {
			const res = await request('/models', { signal: ctx.signal });
			const items = (res.items || []).sort((a, b) => a.failure_mode.localeCompare(b.failure_mode) || Number(b.active) - Number(a.active) || Date.parse(b.trained_at) - Date.parse(a.trained_at));
			const modes = new Set(items.map((m) => m.failure_mode));
			ctx.setSub(`${items.length} model${items.length === 1 ? '' : 's'} for ${modes.size} failure mode${modes.size === 1 ? '' : 's'}`);
			let prevMode = null;
			replace(
				tbody,
				items.length
					? items.map((m) => {
						const fm = mode(m.failure_mode);
						const first = m.failure_mode !== prevMode;
						prevMode = m.failure_mode;
						const go = () => ctx.navigate(cardHref(m));
						return h('tr', { class: [first ? 'group-first' : 'group-rest', m.active ? 'row-active' : ''], tabindex: '0', onClick: go, onKeydown: (e) => e.key === 'Enter' && go(), 'data-model': `${m.version}/${m.failure_mode}` },
							h('td', first ? [h('strong', fm.label), h('div.muted.small', fm.kind)] : null),
							h('td.nowrap', h('a', { href: cardHref(m), class: 'mono' }, m.version), ' ', m.active ? chip('active', 'chip-ok') : null),
							h('td.nowrap', humanize(m.algorithm)),
							h('td.c-num', hours(m.horizon_hours)),
							h('td.c-num', num(m.threshold, 3)),
							h('td.c-num', pct(m.headline?.precision)),
							h('td.c-num', pct(m.headline?.recall)),
							h('td', { title: dateTime(m.trained_at) }, rel(m.trained_at)),
							h('td.muted.small.nowrap', dateRange(m.data_from, m.data_to)),
						);
					})
					: h('tr', h('td', { colspan: 9 }, empty('No models yet', 'Train one with forewarn train, or import the default model.'))),
			);
			view.setAttribute('aria-busy', 'false');
		} catch (e) {
			if (e.name !== 'AbortError') replace(tbody, h('tr', h('td', { colspan: 9 }, failed(e, () => listView(root, ctx)))));
		}
	})();
	return null;
}

const get = (o, path) => path.split('.').reduce((a, k) => (a && typeof a === 'object' ? a[k] : undefined), o);

const TILES = [
	{ label: 'Precision', paths: ['precision_at_threshold', 'events.precision', 'precision'], fmt: pct, hint: 'at the threshold' },
	{ label: 'Recall', paths: ['recall_at_threshold', 'events.recall', 'recall'], fmt: pct, hint: 'at the threshold' },
	{ label: 'PR AUC', paths: ['pr_auc'], fmt: (v) => num(v, 3) },
	{ label: 'Median lead time', paths: ['events.median_lead_time_hours', 'median_lead_time_hours'], fmt: hours, hint: 'warning before failure' },
	{ label: 'False alarms', paths: ['events.false_alarms_per_1000_device_days', 'false_alarms_per_1000_device_days'], fmt: (v) => num(v, 2), hint: 'per 1000 device-days' },
	{ label: 'Recall 24 h ahead', paths: ['events.recall_24h_ahead', 'recall_24h_ahead'], fmt: pct },
];

function cardView(root, ctx, version, failureMode) {
	const fm = mode(failureMode);
	ctx.header(`${fm.label} · ${version}`, `${fm.kind} model card`, h('a.btn.btn-ghost', { href: '#/models' }, icon('back', 16), 'Models'));
	const view = h('div.model-card', { 'data-view': 'model', 'aria-busy': 'true' }, h('div.panel', loading()));
	replace(root, view);

	async function load() {
		try {
			const m = await request(`/models/${seg(version)}/${seg(fm.kind)}/${seg(fm.component)}`, { signal: ctx.signal });
			draw(m);
			view.setAttribute('aria-busy', 'false');
		} catch (e) {
			if (e.name === 'AbortError') return;
			replace(view, h('div.panel', e.status === 404 ? empty('No such model', `${version} ${failureMode}`) : failed(e, load)));
		}
	}

	function draw(m) {
		const metrics = m.metrics || {};
		const used = new Set();
		const tiles = [];
		for (const t of TILES) {
			const p = t.paths.find((pp) => get(metrics, pp) !== undefined);
			if (!p) continue;
			if (!p.includes('.')) used.add(p);
			tiles.push(tile(t.label, t.fmt(get(metrics, p)), t.hint));
		}
		tiles.push(tile('Threshold', num(m.threshold, 3), 'flag when risk is above'));
		tiles.push(tile('Horizon', hours(m.horizon_hours), 'how far ahead it predicts'));

		const actions = h('div.model-actions', m.active
			? [chip('active', 'chip-ok'), h('button.btn.btn-ghost-danger', { 'data-action': 'rollback', onClick: () => rollback(m) }, 'Roll back')]
			: [chip('inactive', 'chip-muted'), h('button.btn.btn-primary', { 'data-action': 'activate', onClick: () => activate(m) }, 'Activate this model')],
		);
		const feats = Array.isArray(m.features) ? m.features : [];
		const why = typeof metrics.why === 'string' ? metrics.why : null;
		if (why) used.add('why');
		const importances = Array.isArray(metrics.feature_importances) ? metrics.feature_importances : null;
		if (importances) used.add('feature_importances');
		const rest = Object.fromEntries(Object.entries(metrics).filter(([k]) => !used.has(k)));

		const facts = h('div.model-facts',
			fact('Algorithm', humanize(m.algorithm)),
			fact('Trained', h('span', { title: dateTime(m.trained_at) }, `${dateOnly(m.trained_at)} · ${rel(m.trained_at)}`)),
			fact('Training data', dateRange(m.data_from, m.data_to)),
			fact('Failure mode', m.failure_mode),
		);
		const panel = (title, body, extra) => h('section.panel', h('div.panel-head', h('h2', title), extra), body);
		const featList = feats.length ? h('ul.feature-list', feats.map((f) => h('li.mono', typeof f === 'string' ? f : JSON.stringify(f)))) : empty('None listed');
		const side = h('div.model-side',
			importances ? panel('Feature importance', importanceBars(importances)) : null,
			panel('Features', featList, h('span.muted.small', String(feats.length))),
		);
		replace(
			view,
			h('section.panel.model-head', facts, actions),
			h('div.tiles.tiles-6', tiles),
			why ? h('section.panel.why', h('div.why-label', 'Why this model was chosen'), h('p', why)) : null,
			h('div.model-cols', panel('Card details', Object.keys(rest).length ? jsonView(rest, 0) : empty('No further metrics')), side),
		);
	}

	function confirmThen(title, text, label, fn) {
		modal({
			title,
			body: h('p', text),
			actions: [
				{ label: 'Cancel' },
				{
					label,
					kind: 'primary',
					action: 'confirm',
					onClick: async (close) => {
						try {
							await fn();
							close();
						} catch (e) {
							close();
							report(e, e.status === 403 ? 'Not allowed' : 'Failed');
						}
					},
				},
			],
		});
	}

	function activate(m) {
		confirmThen('Activate model', `Score ${m.failure_mode} with ${m.version} from now on? The current model stays available for roll back.`, 'Activate', async () => {
			const r = await request(`/models/${seg(m.version)}/${seg(fm.kind)}/${seg(fm.component)}/activate`, { method: 'POST', body: {} });
			toast(`${r?.version || m.version} now scores ${m.failure_mode}.`, 'success', 'Model activated');
			load();
		});
	}

	function rollback(m) {
		confirmThen('Roll back', `Go back to the previously active model for ${m.failure_mode}?`, 'Roll back', async () => {
			const r = await request('/models/rollback', { method: 'POST', body: { failure_mode: m.failure_mode } });
			toast(`${r?.version || 'The previous model'} is active for ${m.failure_mode}.`, 'success', 'Rolled back');
			if (r?.version && r.version !== version) ctx.navigate(cardHref(r));
			else load();
		});
	}

	load();
	return null;
}

function importanceBars(list) {
	const rows = list.map((x) => (Array.isArray(x) ? { name: x[0], v: Number(x[1]) } : { name: x.feature ?? x.name, v: Number(x.importance ?? x.value) })).filter((r) => Number.isFinite(r.v));
	const max = Math.max(...rows.map((r) => Math.abs(r.v)), 1e-9);
	return h('ul.imp-list', rows.slice(0, 12).map((r) => {
		const fill = h('span.imp-fill');
		fill.style.width = `${(Math.abs(r.v) / max) * 100}%`;
		return h('li', h('span.imp-name.mono', { title: r.name }, r.name), h('span.imp-bar', fill), h('span.imp-v', num(r.v, 3)));
	}),
	);
}

// Generic JSON rendering: objects as definition lists, arrays of objects as tables.
function scalar(v) {
	if (v == null) return h('span.muted', DASH);
	if (typeof v === 'number') return h('span.num', Number.isInteger(v) ? num(v) : num(v, 4));
	if (typeof v === 'boolean') return chip(v ? 'yes' : 'no', v ? 'chip-ok' : 'chip-muted');
	const str = String(v);
	if (/^\d{4}-\d\d-\d\dT/.test(str)) return h('span', { title: str }, dateTime(str));
	return h('span', str);
}

function isScalar(v) {
	return v === null || typeof v !== 'object';
}

function jsonView(v, depth) {
	if (isScalar(v)) return scalar(v);
	if (Array.isArray(v)) {
		if (!v.length) return h('span.muted', 'none');
		if (v.every(isScalar)) return h('span.inline-list', v.map((x) => h('span.skill', String(x))));
		if (v.every((x) => Array.isArray(x) && x.every(isScalar))) return h('ul.pair-list', v.slice(0, 30).map((x) => h('li', x.map((y, i) => (i ? [' · ', scalar(y)] : scalar(y))))));
		if (depth < 3) return h('ol.jlist', v.map((x) => h('li', jsonView(x, depth + 1))));
		return h('pre.json', JSON.stringify(v, null, 2));
	}
	if (depth > 3) return h('pre.json', JSON.stringify(v, null, 2));
	const entries = Object.entries(v);
	return h('dl', { class: ['jdl', `jdl-d${depth}`] },
		entries.map(([k, val]) => [h('dt', humanize(k)), h('dd', { class: isScalar(val) ? '' : 'nested' }, jsonView(val, depth + 1))]),
	);
}
