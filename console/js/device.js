// Device page: facts, telemetry chart with min–max band, risk over time, current risks, tickets.
import { h, replace, rel, dateTime, dateOnly, pct, num, humanize, mode, factorText, throttle, debounce, DASH } from './util.js';
import { on } from './bus.js';
import { request, getAll, seg } from './api.js';
import { icon, loading, failed, empty, segmented, riskBar, statusChip, prioChip, kindTag, chip, fact, report } from './ui.js';
import { mountChart, legend } from './chart.js';

const RANGES = [
	{ value: '24h', label: '24 h', ms: 24 * 3600e3 },
	{ value: '7d', label: '7 d', ms: 7 * 24 * 3600e3 },
	{ value: '30d', label: '30 d', ms: 30 * 24 * 3600e3 },
];
const prefs = { range: '7d', metricByKind: {} };

const UNITS = [
	[/_pct$/, '%'], [/_c$/, '°C'], [/_mm_s$/, 'mm/s'], [/_m3h$/, 'm³/h'], [/_bar$/, 'bar'], [/_a$/, 'A'], [/_v$/, 'V'],
	[/_s$/, 's'], [/_h$/, 'h'], [/_rms$/, 'g'], [/_count$/, 'per 10 min'], [/_errors$/, 'per 10 min'],
];
function unitOf(metric) {
	for (const [re, u] of UNITS) if (re.test(metric)) return u;
	return '';
}
function metricLabel(metric) {
	const base = metric.replace(/_(pct|c|mm_s|m3h|bar|a|v|s|h)$/, '');
	return humanize(base);
}
function decimalsFor(step) {
	if (!step || !Number.isFinite(step)) return 2;
	return Math.max(0, Math.min(4, -Math.floor(Math.log10(step))));
}

export function mount(root, ctx) {
	const id = ctx.params[0];
	if (!id) {
		ctx.navigate('#/fleet');
		return null;
	}
	let dev = null;
	let metric = null;
	let telChart = null;
	let riskChart = null;

	const rangeSeg = segmented(RANGES, prefs.range, (v) => {
		prefs.range = v;
		loadSeries();
	}, 'Time range');
	ctx.header(id, 'Loading…', h('a.btn.btn-ghost', { href: '#/fleet' }, icon('back', 16), 'Fleet'), rangeSeg);

	const factsBox = h('div.panel.device-facts', loading());
	const metricPicker = h('div.metric-picker', { role: 'tablist', 'aria-label': 'Metric' });
	const telBox = h('div.chart-box.chart-tel');
	const telNote = h('div.muted.small.chart-note');
	const riskBox = h('div.chart-box.chart-risk');
	const riskLegend = h('div');
	const risksBox = h('div.risk-list', loading());
	const ticketsBox = h('div', loading());
	const view = h('div.device-grid', { 'data-view': 'device', 'aria-busy': 'true' },
		h('div.device-main', factsBox,
			h('section.panel', h('div.panel-head', h('h2', 'Telemetry'), metricPicker), telBox, telNote),
			h('section.panel', h('div.panel-head', h('h2', 'Risk over time'), riskLegend), riskBox),
		),
		h('div.device-side', h('section.panel', h('div.panel-head', h('h2', 'Current risk')), risksBox),
			h('section.panel', h('div.panel-head', h('h2', 'Tickets')), ticketsBox),
		),
	);
	replace(root, view);

	const range = () => {
		const ms = RANGES.find((r) => r.value === prefs.range).ms;
		// The range ends at the device's newest data: a device offline for days (or a
		// fleet on a simulated clock) still shows its last readings, not an empty week.
		const seen = Date.parse(dev?.last_seen_at || '');
		const to = Number.isFinite(seen) ? Math.min(Date.now(), seen + 60_000) : Date.now();
		return { from: to - ms, to };
	};
	const iso = (t) => new Date(t).toISOString();

	function marks() {
		return (dev?.tickets || []).map((t) => ({
			t: Date.parse(t.opened_at),
			label: `#${t.id}`,
			title: `Ticket #${t.id} · ${mode(t.failure_mode).label} · ${t.status} · opened ${dateTime(t.opened_at)}`,
			onClick: () => ctx.openTicket(t.id),
		}));
	}

	async function loadDevice(first) {
		try {
			dev = await request(`/devices/${seg(id)}`, { signal: ctx.signal });
			drawDevice();
			if (first) {
				pickMetric();
				await loadSeries();
				view.setAttribute('aria-busy', 'false');
			}
		} catch (e) {
			if (e.name === 'AbortError') return;
			if (first) {
				replace(view, e.status === 404 ? empty(`No device ${id}`, 'It may have been removed, or the id is mistyped.') : failed(e, () => ctx.navigate(location.hash)));
				ctx.setSub('');
			} else report(e, 'Could not refresh the device');
		}
	}

	function drawDevice() {
		const d = dev;
		ctx.setSub([humanize(d.kind), d.model, d.customer ? `customer ${d.customer}` : null].filter(Boolean).join(' · '));
		const status = d.stale_since
			? chip(`stale since ${rel(d.stale_since).replace(' ago', '')}`, 'chip-warn')
			: d.online === true
				? chip('online', 'chip-ok')
				: d.online === false
					? chip('offline', 'chip-muted')
					: chip('unknown', 'chip-muted');
		replace(
			factsBox,
			h('div.fact-strip', fact('Status', status),
				fact('Last seen', d.last_seen_at ? h('span', { title: dateTime(d.last_seen_at) }, rel(d.last_seen_at)) : 'never'),
				fact('Highest risk', d.risk ? riskBar(d.risk.probability, { above: d.risk.above_threshold }) : 'not scored'),
				fact('Open tickets', String(d.open_tickets ?? 0)),
				fact('Installed', d.installed_at ? dateOnly(d.installed_at) : DASH),
				fact('Location', d.latitude != null ? `${num(d.latitude, 3)}, ${num(d.longitude, 3)}` : DASH),
			),
		);
		// risks per mode
		const risks = [...(d.risks || [])].sort((a, b) => b.probability - a.probability);
		const riskItem = (r) => h('div', { class: ['risk-item', r.above_threshold ? 'above' : ''] },
			h('div.risk-item-head', h('strong', mode(r.failure_mode).label), r.above_threshold ? chip('above threshold', 'chip-bad') : null),
			riskBar(r.probability, { above: r.above_threshold, wide: true }),
			r.top_factors && r.top_factors.length ? h('ul.factors.small', r.top_factors.slice(0, 3).map((f) => h('li', factorText(f)))) : null,
			h('div.muted.small', `scored ${rel(r.time)} · model ${r.model_version}`),
		);
		replace(risksBox, risks.length ? risks.map(riskItem) : empty('Not scored yet'));
		const tickets = d.tickets || [];
		const open = (t) => ctx.openTicket(t.id);
		const ticketItem = (t) => h('li.mini-item', { tabindex: '0', 'data-ticket-id': t.id, onClick: () => open(t), onKeydown: (e) => e.key === 'Enter' && open(t) },
			h('div.mini-top', prioChip(t.priority), h('strong', `#${t.id}`), h('span', mode(t.failure_mode).label), h('span.grow'), statusChip(t.status)),
			h('div.muted.small', kindTag(t.kind), ` opened ${rel(t.opened_at)}`, t.technician_name ? ` · ${t.technician_name}` : ''),
		);
		replace(ticketsBox, tickets.length ? h('ul.mini-list', tickets.map(ticketItem)) : empty('No tickets for this device'));
		// redraw marks on charts when tickets change
		if (telChart && telChart.opts) telChart.update({ ...telChart.opts, marks: marks() });
		if (riskChart && riskChart.opts) riskChart.update({ ...riskChart.opts, marks: marks() });
	}

	function pickMetric() {
		const metrics = dev.metrics || [];
		const pref = prefs.metricByKind[dev.kind];
		metric = metrics.includes(pref) ? pref : metrics[0] || null;
		replace(
			metricPicker,
			metrics.map((m) =>
				h('button', {
					role: 'tab',
					class: ['pill', m === metric ? 'on' : ''],
					'aria-selected': m === metric ? 'true' : 'false',
					'data-metric': m,
					onClick: (e) => {
						metric = m;
						prefs.metricByKind[dev.kind] = m;
						for (const b of metricPicker.children) {
							b.classList.toggle('on', b === e.currentTarget);
							b.setAttribute('aria-selected', b === e.currentTarget ? 'true' : 'false');
						}
						loadTelemetry();
					},
				}, metricLabel(m)),
			),
		);
	}

	let telSeq = 0;
	async function loadTelemetry() {
		const my = ++telSeq;
		const { from, to } = range();
		if (!metric) {
			replace(telBox, empty('This device reports no metrics'));
			return;
		}
		telBox.classList.add('dim');
		try {
			const t = await request(`/devices/${seg(id)}/telemetry`, { query: { metric, from: iso(from), to: iso(to) }, signal: ctx.signal });
			if (my !== telSeq) return;
			const pts = (t.points || []).map((p) => ({ t: Date.parse(p.time), v: p.avg, lo: p.min, hi: p.max, n: p.count }));
			const gap = (t.bucket_seconds || 3600) * 1000 * 2.5;
			const unit = unitOf(metric);
			const opts = {
				kind: 'telemetry',
				label: `${metricLabel(metric)} telemetry`,
				height: 230,
				from,
				to,
				series: [{ label: `${metricLabel(metric)}${unit ? ` (${unit})` : ''}`, cls: 'c-tel', points: pts, gap }],
				bands: [{ cls: 'c-tel', points: pts, gap }],
				marks: marks(),
				yFormat: (v, step) => num(v, decimalsFor(step)),
				emptyText: 'No readings in this range',
			};
			if (!telChart) {
				telChart = mountChart(telBox, opts);
			} else telChart.update(opts);
			telChart.opts = opts;
			const bucket = t.bucket_seconds >= 3600 ? `${num(t.bucket_seconds / 3600, 1)} h` : `${num(t.bucket_seconds / 60)} min`;
			telNote.textContent = `${metricLabel(metric)}${unit ? (unit.startsWith('per ') ? ` ${unit}` : ` in ${unit}`) : ''} · average per ${bucket} with min–max band · ${num(pts.length)} points from ${t.source === 'telemetry_hourly' ? 'the hourly rollup' : 'raw readings'}`;
		} catch (e) {
			if (e.name === 'AbortError' || my !== telSeq) return;
			telChart?.destroy();
			telChart = null;
			replace(telBox, failed(e, loadTelemetry));
		} finally {
			if (my === telSeq) telBox.classList.remove('dim');
		}
	}

	let predSeq = 0;
	async function loadPredictions() {
		const my = ++predSeq;
		const { from, to } = range();
		riskBox.classList.add('dim');
		try {
			const items = await getAll(`/devices/${seg(id)}/predictions`, { from: iso(from), to: iso(to), limit: 500 }, { max: 6000, signal: ctx.signal });
			if (my !== predSeq) return;
			const byMode = new Map();
			for (const p of items) {
				if (!byMode.has(p.failure_mode)) byMode.set(p.failure_mode, []);
				byMode.get(p.failure_mode).push({ t: Date.parse(p.time), v: p.probability });
			}
			const modes = [...byMode.keys()].sort();
			const series = modes.map((m, i) => {
				const pts = byMode.get(m).sort((a, b) => a.t - b.t);
				const gaps = [];
				for (let k = 1; k < pts.length; k++) gaps.push(pts[k].t - pts[k - 1].t);
				gaps.sort((a, b) => a - b);
				const med = gaps.length ? gaps[gaps.length >> 1] : 3600e3;
				return { label: mode(m).label, cls: `c${i % 6}`, points: pts, gap: Math.max(med * 4, 3 * 3600e3) };
			});
			replace(riskLegend, series.length > 0 ? legend(series) : h('span'));
			const opts = {
				kind: 'risk',
				label: 'Risk over time',
				height: 190,
				from,
				to,
				yMin: 0,
				yMax: Math.min(1, Math.ceil(Math.max(0.2, ...items.map((p) => p.probability * 1.15)) * 10) / 10),
				series,
				marks: marks(),
				yFormat: (v) => pct(v, 0),
				emptyText: 'No predictions in this range',
			};
			if (!riskChart) riskChart = mountChart(riskBox, opts);
			else riskChart.update(opts);
			riskChart.opts = opts;
		} catch (e) {
			if (e.name === 'AbortError' || my !== predSeq) return;
			riskChart?.destroy();
			riskChart = null;
			replace(riskBox, failed(e, loadPredictions));
		} finally {
			if (my === predSeq) riskBox.classList.remove('dim');
		}
	}

	function loadSeries() {
		return Promise.all([loadTelemetry(), loadPredictions()]);
	}

	const refreshDevice = debounce(() => loadDevice(false), 1500);
	const refreshRisk = throttle(() => {
		loadDevice(false);
		loadPredictions();
	}, 15_000);
	const unsubs = [
		on('stream:ticket', (d) => (d?.device === undefined || d.device === id) && refreshDevice()),
		on('ticket:changed', (t) => t?.device === id && refreshDevice()),
		on('stream:prediction', refreshRisk),
		on('stream:reconnected', refreshDevice),
	];

	loadDevice(true);
	return () => {
		unsubs.forEach((u) => u());
		refreshDevice.cancel();
		refreshRisk.cancel();
		telChart?.destroy();
		riskChart?.destroy();
	};
}
