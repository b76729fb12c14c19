// Technicians: the team list, an overview map of homes, and a technician's day route.
import { h, s, replace, clear, isoDay, slot, timeOnly, num, mode, debounce, humanize, innerWidth } from './util.js';
import { on } from './bus.js';
import { request, seg } from './api.js';
import { icon, loading, failed, empty, statusChip, prioChip, chip, check } from './ui.js';
import { fit, backdrop, house } from './map.js';

const DAYS = ['', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun'];
const prefs = { date: null };

function shiftDays(days) {
	const d = [...(days || [])].sort((a, b) => a - b);
	if (!d.length) return 'no shift days';
	const parts = [];
	let i = 0;
	while (i < d.length) {
		let j = i;
		while (j + 1 < d.length && d[j + 1] === d[j] + 1) j++;
		parts.push(j - i >= 2 ? `${DAYS[d[i]]}–${DAYS[d[j]]}` : d.slice(i, j + 1).map((x) => DAYS[x]).join(', '));
		i = j + 1;
	}
	return parts.join(', ');
}

function initials(name) {
	return (name || '?').split(/\s+/).filter(Boolean).slice(0, 2).map((p) => p[0].toUpperCase()).join('');
}

export function mount(root, ctx) {
	let techs = [];
	let selected = ctx.params[0] || null;
	if (!prefs.date) prefs.date = isoDay();

	ctx.header('Technicians', '');
	const listBox = h('ul.tech-list', h('li', loading()));
	const mainBox = h('div.tech-main', h('div.panel', loading()));
	const view = h('div.tech-grid', { 'data-view': 'technicians', 'aria-busy': 'true' },
		h('aside.panel.tech-side', listBox),
		mainBox,
	);
	replace(root, view);

	async function load() {
		try {
			const res = await request('/technicians', { signal: ctx.signal });
			techs = (res.items || []).sort((a, b) => Number(b.active) - Number(a.active) || a.name.localeCompare(b.name));
			const active = techs.filter((t) => t.active).length;
			ctx.setSub(`${active} active · ${techs.length - active} inactive`);
			drawList();
			await drawMain();
			view.setAttribute('aria-busy', 'false');
		} catch (e) {
			if (e.name === 'AbortError') return;
			replace(mainBox, h('div.panel', failed(e, load)));
			clear(listBox);
		}
	}

	function drawList() {
		replace(
			listBox,
			h('li', h('button', { class: ['tech-item', 'tech-all', !selected ? 'on' : ''], onClick: () => select(null) }, h('span.avatar.avatar-all', icon('pin', 16)), h('span.tech-name', 'Team overview'))),
			techs.map((t) =>
				h('li', {},
					h('button', { class: ['tech-item', selected === t.external_id ? 'on' : '', t.active ? '' : 'inactive'], 'data-technician': t.external_id, onClick: () => select(t.external_id) },
						h('span.avatar', initials(t.name)),
						h('span.tech-body', h('span.tech-name', t.name, t.active ? null : chip('inactive', 'chip-muted')),
							h('span.muted.small', `${t.external_id} · ${t.home_city || '—'}`),
							h('span.skills', (t.skills || []).slice(0, 4).map((sk) => h('span.skill', humanize(sk))), (t.skills || []).length > 4 ? h('span.skill', `+${t.skills.length - 4}`) : null),
						),
					),
				),
			),
		);
	}

	function select(ext) {
		selected = ext;
		history.replaceState(null, '', ext ? `#/technicians/${encodeURIComponent(ext)}` : '#/technicians');
		drawList();
		drawMain();
	}

	async function drawMain() {
		if (!selected) return drawOverview();
		const t = techs.find((x) => x.external_id === selected);
		if (!t) {
			selected = null;
			return drawOverview();
		}
		return drawRoute(t);
	}

	function drawOverview() {
		const box = h('div.map-box.map-overview');
		replace(
			mainBox,
			h('section.panel', h('div.panel-head', h('h2', 'Team overview'), h('span.muted.small', 'Home bases; pick a technician for their day route')),
				box,
			),
		);
		const pts = techs.filter((t) => Number.isFinite(t.home_latitude)).map((t) => ({ lat: t.home_latitude, lon: t.home_longitude, t }));
		if (!pts.length) {
			replace(box, empty('No technicians yet'));
			return;
		}
		const draw = () => {
			const width = innerWidth(box) || 760;
			const height = Math.max(360, Math.min(560, window.innerHeight - 200));
			const pr = fit(pts, width, height, 56);
			const svg = s('svg.map', { width, height, viewBox: `0 0 ${width} ${height}`, 'data-map': 'overview' }, backdrop(pr));
			// technicians living close together are stacked rather than drawn over each other
			const placed = [];
			for (const p of pts) {
				const x = pr.x(p.lon, p.lat);
				let y = pr.y(p.lon, p.lat);
				while (placed.some((q) => Math.abs(q.x - x) < 150 && Math.abs(q.y - y) < 22)) y += 24;
				placed.push({ x, y });
				const g = s('g', { class: ['map-tech', p.t.active ? '' : 'inactive'].join(' '), tabindex: '0', role: 'button', 'aria-label': p.t.name });
				g.appendChild(s('circle', { cx: x, cy: y, r: 11 }));
				g.appendChild(s('text.map-initials', { x, y: y + 4, 'text-anchor': 'middle' }, initials(p.t.name)));
				g.appendChild(s('text.map-label', { x: x + 15, y: y + 4 }, p.t.name));
				g.appendChild(s('title', {}, `${p.t.name} · ${p.t.home_city || ''} · ${(p.t.skills || []).join(', ')}`));
				g.addEventListener('click', () => select(p.t.external_id));
				g.addEventListener('keydown', (e) => e.key === 'Enter' && select(p.t.external_id));
				svg.appendChild(g);
			}
			replace(box, svg);
		};
		requestAnimationFrame(draw);
	}

	let routeSeq = 0;
	async function drawRoute(t) {
		const my = ++routeSeq;
		const dateInput = h('input', {
			type: 'date',
			class: 'input',
			value: prefs.date,
			'aria-label': 'Date',
			onChange: (e) => {
				if (e.target.value) {
					prefs.date = e.target.value;
					drawRoute(t);
				}
			},
		});
		const shiftDate = (n) => {
			const d = new Date(`${prefs.date}T12:00:00`);
			d.setDate(d.getDate() + n);
			prefs.date = isoDay(d);
			drawRoute(t);
		};
		const mapBox = h('div.map-box', loading('Loading route…'));
		const stopsBox = h('div.stops');
		const summary = h('div.route-summary');
		const about = `${t.external_id} · ${t.home_city || ''} · ${shiftDays(t.shift_days)} ${t.shift_start}–${t.shift_end} · up to ${num(t.max_travel_km)} km`;
		const who = h('div.route-who', h('span.avatar', initials(t.name)), h('div.route-who-text', h('h2', t.name), h('div.muted.small.ellipsis', { title: `${t.timezone} · ${(t.skills || []).join(', ')}` }, about)));
		const nav = h('div.date-nav',
			h('button.icon-btn', { 'aria-label': 'Previous day', onClick: () => shiftDate(-1) }, icon('left', 16)),
			dateInput,
			h('button.icon-btn', { 'aria-label': 'Next day', onClick: () => shiftDate(1) }, icon('right', 16)),
			h('button.btn.btn-sm', { onClick: () => { prefs.date = isoDay(); drawRoute(t); } }, 'Today'),
		);
		replace(mainBox, h('section.panel', h('div.panel-head.route-head', who, nav), summary, h('div.route-body', mapBox, stopsBox)));
		try {
			const r = await request(`/technicians/${seg(t.external_id)}/route`, { query: { date: prefs.date }, signal: ctx.signal });
			if (my !== routeSeq) return;
			const stops = r.stops || [];
			replace(
				summary,
				stat('Stops', String(stops.length)),
				stat('Travel', r.travel_km != null ? `${num(r.travel_km, 1)} km` : '—'),
				stat('First visit', stops.length ? timeOnly(stops[0].start) : '—'),
				stat('Last visit ends', stops.length ? timeOnly(stops[stops.length - 1].end) : '—'),
				stat('Confirmed', stops.length ? `${stops.filter((x) => x.confirmed).length} / ${stops.length}` : '—'),
			);
			renderStops(stopsBox, r, stops);
			requestAnimationFrame(() => renderMap(mapBox, r, stops));
		} catch (e) {
			if (e.name === 'AbortError' || my !== routeSeq) return;
			replace(mapBox, failed(e, () => drawRoute(t)));
		}
	}

	function stat(label, value) {
		return h('div.stat', h('div.stat-v', value), h('div.stat-l', label));
	}

	function renderStops(box, r, stops) {
		replace(
			box,
			h('ol.stop-list', h('li.stop.stop-home', h('span.stop-n.home', icon('pin', 13)), h('div', h('strong', 'Home'), h('div.muted.small', 'Start and end of the day'))),
				stops.map((st, i) =>
					h('li.stop', { tabindex: '0', 'data-ticket-id': st.ticket_id, onClick: () => ctx.openTicket(st.ticket_id), onKeydown: (e) => e.key === 'Enter' && ctx.openTicket(st.ticket_id) },
						h('span', { class: ['stop-n', `s-${st.status}`] }, String(i + 1)),
						h('div.stop-body', h('div.stop-top', h('strong', `${timeOnly(st.start)}–${timeOnly(st.end)}`), prioChip(st.priority), statusChip(st.status)),
							h('div', h('span.mono', st.device), ` · ${mode(st.failure_mode).label}`),
							h('div.muted.small', `Ticket #${st.ticket_id}`, st.confirmed ? [' · ', check(true)] : ' · not confirmed'),
						),
					),
				),
			),
			stops.length ? null : empty('No visits this day', 'Nothing is booked for this technician on the chosen date.'),
		);
	}

	function renderMap(box, r, stops) {
		const width = innerWidth(box) || 480;
		const height = Math.max(340, Math.min(520, window.innerHeight - 260));
		const home = r.home && Number.isFinite(r.home.latitude) ? { lat: r.home.latitude, lon: r.home.longitude } : null;
		const pts = stops.filter((x) => Number.isFinite(x.latitude)).map((x) => ({ lat: x.latitude, lon: x.longitude, st: x }));
		const all = [...(home ? [home] : []), ...pts];
		const pr = fit(all, width, height, 44);
		const svg = s('svg.map', { width, height, viewBox: `0 0 ${width} ${height}`, 'data-map': 'route' }, backdrop(pr));
		const seq = [...(home ? [home] : []), ...pts];
		if (seq.length > 1) {
			const d = seq.map((p, i) => `${i ? 'L' : 'M'}${pr.x(p.lon, p.lat).toFixed(1)},${pr.y(p.lon, p.lat).toFixed(1)}`).join('');
			svg.appendChild(s('path.route-line', { d }));
			if (home && pts.length) {
				const last = pts[pts.length - 1];
				svg.appendChild(s('path.route-line.route-return', { d: `M${pr.x(last.lon, last.lat)},${pr.y(last.lon, last.lat)}L${pr.x(home.lon, home.lat)},${pr.y(home.lon, home.lat)}` }));
			}
		}
		if (home) {
			const hx = pr.x(home.lon, home.lat);
			const hy = pr.y(home.lon, home.lat);
			svg.appendChild(s('g.map-home-g', s('circle.map-home-halo', { cx: hx, cy: hy, r: 16 }), house(hx, hy), s('title', {}, 'Home')));
		}
		pts.forEach((p, i) => {
			const x = pr.x(p.lon, p.lat);
			const y = pr.y(p.lon, p.lat);
			const g = s('g', { class: `map-stop s-${p.st.status}`, tabindex: '0', role: 'button', 'aria-label': `Stop ${i + 1}, ticket ${p.st.ticket_id}` });
			g.appendChild(s('circle', { cx: x, cy: y, r: 12 }));
			g.appendChild(s('text', { x, y: y + 4, 'text-anchor': 'middle' }, String(i + 1)));
			g.appendChild(s('title', {}, `${i + 1}. ${slot(p.st.start, p.st.end)} · ${p.st.device} · ${mode(p.st.failure_mode).label}`));
			g.addEventListener('click', () => ctx.openTicket(p.st.ticket_id));
			svg.appendChild(g);
		});
		replace(box, svg);
	}

	const refresh = debounce(() => {
		const t = techs.find((x) => x.external_id === selected);
		if (t) drawRoute(t);
	}, 800);
	const unsubs = [on('stream:booking', refresh), on('stream:reconnected', refresh), on('ticket:changed', (tk) => tk?.technician === selected && refresh())];

	load();
	return () => {
		unsubs.forEach((u) => u());
		refresh.cancel();
	};
}
