// KPIs: how well prediction and dispatch work over a period.
import { h, replace, pct, num, hours, dateOnly } from './util.js';
import { request } from './api.js';
import { loading, failed, segmented, tile } from './ui.js';

const state = { days: 30 };

export function mount(root, ctx) {
	let seq = 0;
	const periods = [7, 30, 90].map((d) => ({ value: d, label: `${d} days` }));
	ctx.header('KPIs', '', segmented(periods, state.days, (v) => { state.days = v; load(); }, 'Period'));
	const view = h('div.kpis', { 'data-view': 'kpis', 'aria-busy': 'true' }, loading());
	replace(root, view);

	async function load() {
		const my = ++seq;
		view.setAttribute('aria-busy', 'true');
		view.classList.add('dim');
		const to = new Date();
		const from = new Date(to.getTime() - state.days * 86400e3);
		try {
			const k = await request('/kpis', { query: { from: from.toISOString(), to: to.toISOString() }, signal: ctx.signal });
			if (my !== seq) return;
			ctx.setSub(`${dateOnly(k.from || from)} – ${dateOnly(k.to || to)}`);
			replace(view, draw(k));
			view.setAttribute('aria-busy', 'false');
		} catch (e) {
			if (e.name !== 'AbortError' && my === seq) replace(view, h('div.panel', failed(e, load)));
		} finally {
			if (my === seq) view.classList.remove('dim');
		}
	}
	load();
	return null;
}

function draw(k) {
	const t = k.tickets || {};
	const total = (t.proactive || 0) + (t.reactive || 0) + (t.incident || 0);
	const share = (v) => (total ? ` (${pct((v || 0) / total, 0)})` : '');
	return h('div.tiles.tiles-4',
		tile('Proactive share', pct(k.proactive_share), `of ${num(total)} tickets were opened before a failure`, { key: 'proactive_share', cls: 'tile-accent' }),
		tile('Proactive precision', pct(k.proactive_precision), 'predicted faults confirmed on site', { key: 'proactive_precision' }),
		tile('Median lead time', hours(k.median_lead_time_hours), 'from ticket to expected failure', { key: 'median_lead_time_hours' }),
		tile('First-time fix rate', pct(k.first_time_fix_rate), 'resolved with a single visit', { key: 'first_time_fix_rate' }),
		tile('Time to first contact', hours(k.median_time_to_first_contact_hours), 'median, ticket to first message', { key: 'median_time_to_first_contact_hours' }),
		tile('Time to resolution', hours(k.median_time_to_resolution_hours), 'median, ticket opened to resolved', { key: 'median_time_to_resolution_hours' }),
		tile('Confirmations vs declines', [num(k.confirmations), h('span.tile-vs', ' vs '), num(k.declines)], `${num(k.reschedules)} rescheduled`, {
			key: 'confirmations',
			extra: stack([['ok', k.confirmations, 'confirmed'], ['warn', k.reschedules, 'rescheduled'], ['bad', k.declines, 'declined']]),
		}),
		tile('Messages sent', num(k.messages_sent), 'to customers in the period', { key: 'messages_sent' }),
		tile('Tickets opened', num(total), `proactive ${num(t.proactive)}${share(t.proactive)} · reactive ${num(t.reactive)} · incident ${num(t.incident)}`, {
			key: 'tickets',
			extra: stack([['proactive', t.proactive, 'proactive'], ['reactive', t.reactive, 'reactive'], ['incident', t.incident, 'incident']]),
		}),
		h('a.tile.tile-link', { href: '#/fleet', 'data-kpi': 'stale_devices' }, h('div.tile-label', 'Stale devices'), h('div.tile-value', num(k.stale_devices)), h('div.tile-hint', 'silent longer than expected, now')),
		h('a.tile.tile-link', { href: '#/incidents', 'data-kpi': 'open_incidents' }, h('div.tile-label', 'Open incidents'), h('div.tile-value', num(k.open_incidents)), h('div.tile-hint', 'many devices failing alike, now')),
	);
}

function stack(parts) {
	const total = parts.reduce((a, p) => a + (p[1] || 0), 0);
	const bar = h('div.stack');
	for (const [cls, v, title] of parts) {
		if (!v) continue;
		const seg = h('span', { class: ['stack-seg', `mix-${cls}`], title: `${num(v)} ${title}` });
		seg.style.width = `${(v / total) * 100}%`;
		bar.appendChild(seg);
	}
	return bar;
}
