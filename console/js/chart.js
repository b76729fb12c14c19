// Time-series charts in inline SVG: ticks, gap-aware lines, min–max bands, marks, hover tooltip.
import { h, s, clear, num, dateTime, timeOnly, toDate } from './util.js';

const M = { left: 52, right: 14, top: 14, bottom: 26 };
const HOUR = 3600e3;
const DAY = 24 * HOUR;

function niceStep(range, count) {
	const raw = range / Math.max(1, count);
	const mag = 10 ** Math.floor(Math.log10(raw));
	const n = raw / mag;
	const f = n < 1.5 ? 1 : n < 2.25 ? 2 : n < 3.5 ? 2.5 : n < 7.5 ? 5 : 10;
	return f * mag;
}

function yTicks(min, max, count) {
	const step = niceStep(max - min, count);
	const out = [];
	for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
	return { ticks: out, step };
}

const T_STEPS = [HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY];

function tTicks(from, to, maxCount) {
	const span = to - from;
	const step = T_STEPS.find((st) => span / st <= maxCount) || T_STEPS[T_STEPS.length - 1];
	const d = new Date(from);
	d.setMinutes(0, 0, 0);
	if (step >= DAY) d.setHours(0);
	else d.setHours(Math.floor(d.getHours() / (step / HOUR)) * (step / HOUR));
	const out = [];
	let guard = 0;
	while (d.getTime() <= to && guard++ < 500) {
		if (d.getTime() >= from) out.push(d.getTime());
		if (step >= DAY) d.setDate(d.getDate() + step / DAY);
		else d.setTime(d.getTime() + step);
	}
	return { ticks: out, step };
}

const dayFmt = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short' });
const wdFmt = new Intl.DateTimeFormat('en-GB', { weekday: 'short', day: 'numeric' });

function tLabel(t, step) {
	const d = new Date(t);
	if (step >= DAY) return dayFmt.format(d);
	if (d.getHours() === 0 && d.getMinutes() === 0) return wdFmt.format(d);
	return timeOnly(d);
}

/** Splits points into runs where consecutive times are closer than `gap`. */
function runs(points, gap) {
	const out = [];
	let cur = [];
	let prev = null;
	for (const p of points) {
		if (prev !== null && gap && p.t - prev > gap) {
			if (cur.length) out.push(cur);
			cur = [];
		}
		cur.push(p);
		prev = p.t;
	}
	if (cur.length) out.push(cur);
	return out;
}

function nearest(points, t) {
	let lo = 0;
	let hi = points.length - 1;
	if (hi < 0) return null;
	while (lo < hi) {
		const mid = (lo + hi) >> 1;
		if (points[mid].t < t) lo = mid + 1;
		else hi = mid;
	}
	const a = points[lo];
	const b = lo > 0 ? points[lo - 1] : null;
	return b && Math.abs(b.t - t) < Math.abs(a.t - t) ? b : a;
}

/**
 * Renders into `box` (re-rendered when the box resizes).
 * opts: {kind, height, from, to, series: [{label, cls, points:[{t, v}], gap}],
 *        bands: [{cls, points:[{t, lo, hi}], gap}], marks: [{t, label, title, onClick}],
 *        yMin, yMax, yFormat, unit, emptyText}
 */
export function mountChart(box, opts) {
	let current = opts;
	let lastW = 0;
	const draw = () => {
		const w = Math.floor(box.clientWidth);
		if (w <= 0) return;
		lastW = w;
		clear(box);
		box.appendChild(render(w, current));
	};
	const ro = new ResizeObserver(() => {
		if (Math.floor(box.clientWidth) !== lastW) draw();
	});
	ro.observe(box);
	draw();
	return {
		update(o) {
			current = o;
			draw();
		},
		destroy() {
			ro.disconnect();
		},
	};
}

function render(width, o) {
	const height = o.height || 220;
	const fmtY = o.yFormat || ((v) => num(v, 2));
	const from = o.from;
	const to = o.to;
	const series = (o.series || []).map((sr) => ({ ...sr, points: [...sr.points].sort((a, b) => a.t - b.t) }));
	const bands = (o.bands || []).map((b) => ({ ...b, points: [...b.points].sort((a, b2) => a.t - b2.t) }));
	const hasData = series.some((sr) => sr.points.length) || bands.some((b) => b.points.length);

	let yMin = o.yMin;
	let yMax = o.yMax;
	if (yMin === undefined || yMax === undefined) {
		let lo = Infinity;
		let hi = -Infinity;
		for (const sr of series) for (const p of sr.points) if (p.v != null) { lo = Math.min(lo, p.v); hi = Math.max(hi, p.v); }
		for (const b of bands) for (const p of b.points) { if (p.lo != null) lo = Math.min(lo, p.lo); if (p.hi != null) hi = Math.max(hi, p.hi); }
		if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
		if (lo === hi) { lo -= 1; hi += 1; }
		const pad = (hi - lo) * 0.08;
		if (yMin === undefined) yMin = lo - pad;
		if (yMax === undefined) yMax = hi + pad;
	}
	const innerW = width - M.left - M.right;
	const innerH = height - M.top - M.bottom;
	const x = (t) => M.left + ((t - from) / (to - from)) * innerW;
	const y = (v) => M.top + (1 - (v - yMin) / (yMax - yMin)) * innerH;
	const clampX = (px) => Math.max(M.left, Math.min(M.left + innerW, px));

	const svg = s('svg', {
		class: 'chart',
		width,
		height,
		viewBox: `0 0 ${width} ${height}`,
		'data-chart': o.kind || null,
		role: 'img',
		'aria-label': o.label || 'chart',
	});

	// grid + y axis
	const yt = yTicks(yMin, yMax, Math.max(2, Math.floor(innerH / 38)));
	const grid = s('g.grid');
	for (const v of yt.ticks) {
		if (v < yMin || v > yMax) continue;
		const py = Math.round(y(v)) + 0.5;
		grid.appendChild(s('line', { x1: M.left, x2: M.left + innerW, y1: py, y2: py }));
		grid.appendChild(s('text.tick', { x: M.left - 8, y: py + 4, 'text-anchor': 'end' }, fmtY(v, yt.step)));
	}
	// x axis
	const xt = tTicks(from, to, Math.max(2, Math.floor(innerW / 90)));
	for (const t of xt.ticks) {
		const px = Math.round(x(t)) + 0.5;
		grid.appendChild(s('line.xtick', { x1: px, x2: px, y1: M.top + innerH, y2: M.top + innerH + 4 }));
		grid.appendChild(s('text.tick', { x: px, y: height - 8, 'text-anchor': 'middle' }, tLabel(t, xt.step)));
	}
	grid.appendChild(s('line.axis', { x1: M.left, x2: M.left + innerW, y1: M.top + innerH + 0.5, y2: M.top + innerH + 0.5 }));
	svg.appendChild(grid);

	// clip to plot area
	const clipId = `clip${Math.random().toString(36).slice(2, 9)}`;
	svg.appendChild(s('defs', {}, s('clipPath', { id: clipId }, s('rect', { x: M.left, y: M.top - 2, width: innerW, height: innerH + 4 }))));
	const plot = s('g', { 'clip-path': `url(#${clipId})` });
	svg.appendChild(plot);

	for (const b of bands) {
		for (const run of runs(b.points.filter((p) => p.lo != null && p.hi != null), b.gap)) {
			if (run.length < 2) continue;
			const top = run.map((p) => `${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`);
			const bottom = run.slice().reverse().map((p) => `${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`);
			plot.appendChild(s('path', { class: ['band', b.cls || ''].join(' '), d: `M${top.join('L')}L${bottom.join('L')}Z` }));
		}
	}
	for (const sr of series) {
		const pts = sr.points.filter((p) => p.v != null);
		for (const run of runs(pts, sr.gap)) {
			if (run.length === 1) {
				plot.appendChild(s('circle', { class: ['dot', sr.cls || ''].join(' '), cx: x(run[0].t), cy: y(run[0].v), r: 2 }));
				continue;
			}
			const d = run.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
			plot.appendChild(s('path', { class: ['line', sr.cls || ''].join(' '), d }));
		}
	}
	if (o.threshold != null) {
		const py = y(o.threshold);
		plot.appendChild(s('line.threshold', { x1: M.left, x2: M.left + innerW, y1: py, y2: py }));
	}

	const markG = s('g.marks');
	for (const m of o.marks || []) {
		if (m.t < from || m.t > to) continue;
		const px = Math.round(x(m.t)) + 0.5;
		const g = s('g', { class: ['mark', m.onClick ? 'clickable' : ''].join(' ') });
		g.appendChild(s('line', { x1: px, x2: px, y1: M.top, y2: M.top + innerH }));
		const fw = 8 + (m.label || '').length * 6.2;
		const left = px + fw > width - 2;
		g.appendChild(s('path.flag', { d: `M${px},${M.top} h${left ? -fw : fw} v13 h${left ? fw : -fw} z` }));
		g.appendChild(s('text', { x: left ? px - fw + 4 : px + 4, y: M.top + 10 }, m.label || ''));
		if (m.title) g.appendChild(s('title', {}, m.title));
		if (m.onClick) g.addEventListener('click', m.onClick);
		markG.appendChild(g);
	}

	if (!hasData) {
		svg.appendChild(s('text.chart-empty', { x: M.left + innerW / 2, y: M.top + innerH / 2, 'text-anchor': 'middle' }, o.emptyText || 'No data in this range'));
	}

	// hover
	const wrap = h('div.chart-wrap', svg);
	if (hasData) {
		const cross = s('line.cross', { x1: 0, x2: 0, y1: M.top, y2: M.top + innerH, visibility: 'hidden' });
		const dots = s('g.hover-dots');
		const tip = h('div.chart-tip', { hidden: true });
		svg.appendChild(cross);
		svg.appendChild(dots);
		wrap.appendChild(tip);
		const overlay = s('rect.overlay', { x: M.left, y: M.top, width: innerW, height: innerH });
		svg.appendChild(overlay);
		const refT = [];
		for (const sr of series) for (const p of sr.points) refT.push(p);
		refT.sort((a, b) => a.t - b.t);
		const move = (ev) => {
			const rect = svg.getBoundingClientRect();
			const px = ev.clientX - rect.left;
			const t = from + ((px - M.left) / innerW) * (to - from);
			const ref = nearest(refT, t);
			if (!ref) return;
			const cx = clampX(x(ref.t));
			cross.setAttribute('x1', cx);
			cross.setAttribute('x2', cx);
			cross.setAttribute('visibility', 'visible');
			clear(dots);
			const rows = [];
			for (const sr of series) {
				const p = nearest(sr.points, ref.t);
				if (!p || Math.abs(p.t - ref.t) > (sr.gap || (to - from) / 50) || p.v == null) continue;
				dots.appendChild(s('circle', { class: ['hdot', sr.cls || ''].join(' '), cx: x(p.t), cy: y(p.v), r: 3.5 }));
				rows.push(h('div.tip-row', h('span', { class: ['sw', sr.cls || ''] }), h('span.tip-k', sr.label || ''), h('b', fmtY(p.v, yt.step / 10))));
				if (p.lo !== undefined && p.hi !== undefined) rows.push(h('div.tip-row.tip-sub', `min ${fmtY(p.lo, yt.step / 10)} · max ${fmtY(p.hi, yt.step / 10)}`));
			}
			clear(tip);
			tip.appendChild(h('div.tip-time', dateTime(toDate(ref.t))));
			for (const r of rows) tip.appendChild(r);
			tip.hidden = false;
			const tw = tip.offsetWidth;
			const left = cx + 12 + tw > width ? cx - 12 - tw : cx + 12;
			tip.style.left = `${left}px`;
			tip.style.top = `${M.top + 4}px`;
		};
		const leave = () => {
			cross.setAttribute('visibility', 'hidden');
			clear(dots);
			tip.hidden = true;
		};
		overlay.addEventListener('mousemove', move);
		overlay.addEventListener('mouseleave', leave);
	}
	svg.appendChild(markG);
	return wrap;
}

/** Legend (HTML) for series. */
export function legend(items) {
	return h('div.legend', items.map((it) => h('span.legend-item', h('span', { class: ['sw', it.cls] }), it.label)));
}
