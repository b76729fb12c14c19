// A plain SVG "map": equirectangular projection fitted to the points, with a graticule and
// a scale bar. No tiles, no network.
import { s } from './util.js';

const KM_PER_DEG = 111.32;

/** points: [{lat, lon}] → {x(lon, lat), y(lon, lat), kmPerPx, bounds} */
export function fit(points, width, height, pad = 40) {
	const pts = points.filter((p) => Number.isFinite(p.lat) && Number.isFinite(p.lon));
	const lat0 = pts.length ? pts.reduce((a, p) => a + p.lat, 0) / pts.length : 0;
	const k = Math.cos((lat0 * Math.PI) / 180) || 1;
	let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
	for (const p of pts) {
		minX = Math.min(minX, p.lon * k);
		maxX = Math.max(maxX, p.lon * k);
		minY = Math.min(minY, -p.lat);
		maxY = Math.max(maxY, -p.lat);
	}
	if (!pts.length) {
		minX = -1; maxX = 1; minY = -1; maxY = 1;
	}
	const minSpan = 0.04; // ~4 km: a single point still gets a sensible zoom
	if (maxX - minX < minSpan) { const c = (minX + maxX) / 2; minX = c - minSpan / 2; maxX = c + minSpan / 2; }
	if (maxY - minY < minSpan) { const c = (minY + maxY) / 2; minY = c - minSpan / 2; maxY = c + minSpan / 2; }
	const scale = Math.min((width - 2 * pad) / (maxX - minX), (height - 2 * pad) / (maxY - minY));
	const ox = (width - (maxX - minX) * scale) / 2 - minX * scale;
	const oy = (height - (maxY - minY) * scale) / 2 - minY * scale;
	const x = (lon) => ox + lon * k * scale;
	const y = (_lon, lat) => oy + -lat * scale;
	const lonAt = (px) => (px - ox) / scale / k;
	const latAt = (py) => -((py - oy) / scale);
	return { x, y, kmPerPx: KM_PER_DEG / scale, lonAt, latAt, width, height };
}

const STEPS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10];

/** Background: frame, graticule with degree labels, scale bar. */
export function backdrop(pr) {
	const { width, height } = pr;
	const g = s('g.map-bg');
	g.appendChild(s('rect.map-sea', { x: 0, y: 0, width, height, rx: 8 }));
	const lonSpan = Math.abs(pr.lonAt(width) - pr.lonAt(0));
	const latSpan = Math.abs(pr.latAt(0) - pr.latAt(height));
	const stepLon = STEPS.find((st) => lonSpan / st <= 7) || 10;
	const stepLat = STEPS.find((st) => latSpan / st <= 6) || 10;
	const grid = s('g.map-grid');
	for (let lon = Math.ceil(pr.lonAt(0) / stepLon) * stepLon; lon <= pr.lonAt(width); lon += stepLon) {
		const px = pr.x(lon, 0);
		grid.appendChild(s('line', { x1: px, x2: px, y1: 0, y2: height }));
		grid.appendChild(s('text', { x: px + 3, y: height - 6 }, `${fmtDeg(lon, stepLon)}°E`));
	}
	for (let lat = Math.ceil(pr.latAt(height) / stepLat) * stepLat; lat <= pr.latAt(0); lat += stepLat) {
		const py = pr.y(0, lat);
		grid.appendChild(s('line', { x1: 0, x2: width, y1: py, y2: py }));
		grid.appendChild(s('text', { x: 5, y: py - 3 }, `${fmtDeg(lat, stepLat)}°N`));
	}
	g.appendChild(grid);
	// scale bar
	const target = (width / 5) * pr.kmPerPx;
	const nice = [0.5, 1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000].reduce((best, v) => (Math.abs(v - target) < Math.abs(best - target) ? v : best), 1);
	const len = nice / pr.kmPerPx;
	const sx = width - len - 16;
	const sy = height - 16;
	g.appendChild(s('g.map-scale', s('path', { d: `M${sx},${sy - 5}v5h${len}v-5` }), s('text', { x: sx + len / 2, y: sy - 8, 'text-anchor': 'middle' }, `${nice} km`)));
	return g;
}

function fmtDeg(v, step) {
	const d = step < 0.1 ? 2 : step < 1 ? 1 : 0;
	return v.toFixed(d);
}

/** House marker centred on (x, y). */
export function house(x, y, cls = 'map-home') {
	return s('path', { class: cls, d: `M${x - 9},${y + 8}v-9l9-8 9 8v9z M${x - 3},${y + 8}v-6h6v6` });
}
