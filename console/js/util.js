// DOM building and formatting helpers. Every text goes through text nodes or
// attributes, never through innerHTML, so nothing from the API is parsed as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, props) {
	if (!props) return;
	for (const [k, v] of Object.entries(props)) {
		if (v == null || v === false) continue;
		if (k === 'class') {
			const cls = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
			if (cls) el.setAttribute('class', cls);
		} else if (k === 'text') {
			el.textContent = String(v);
		} else if (k === 'style') {
			Object.assign(el.style, v); // CSSOM, allowed by the page's CSP
		} else if (k.startsWith('on') && typeof v === 'function') {
			el.addEventListener(k.slice(2).toLowerCase(), v);
		} else if (k === 'value' && 'value' in el) {
			el.value = v;
		} else if (k === 'checked' || k === 'selected' || k === 'disabled') {
			el[k] = Boolean(v);
		} else {
			el.setAttribute(k, v === true ? '' : String(v));
		}
	}
}

function append(el, children) {
	for (const c of children) {
		if (c == null || c === false || c === true) continue;
		if (Array.isArray(c)) append(el, c);
		else if (c instanceof Node) el.appendChild(c);
		else el.appendChild(document.createTextNode(String(c)));
	}
}

const isProps = (p) => p !== null && typeof p === 'object' && !Array.isArray(p) && !(p instanceof Node);

function make(el, cls, props, children) {
	if (props !== undefined && !isProps(props)) children.unshift(props);
	else apply(el, props);
	if (cls.length) el.classList.add(...cls);
	if (el.localName === 'button' && !el.hasAttribute('type')) el.type = 'button';
	append(el, children);
	return el;
}

/** HTML element: h('div.card.big', {onClick: f, 'data-x': 1}, 'text', child, [more]); props optional. */
export function h(tag, props, ...children) {
	const [name, ...cls] = tag.split('.');
	return make(document.createElement(name), cls, props, children);
}

/** SVG element, same signature as h. */
export function s(tag, props, ...children) {
	const [name, ...cls] = tag.split('.');
	return make(document.createElementNS(SVG_NS, name), cls, props, children);
}

export function clear(el) {
	while (el.firstChild) el.removeChild(el.firstChild);
	return el;
}

export function replace(el, ...children) {
	clear(el);
	append(el, children);
	return el;
}

/** Content width (without padding) of an element. */
export function innerWidth(el) {
	const cs = getComputedStyle(el);
	return Math.floor(el.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight));
}

export function debounce(fn, ms) {
	let t = null;
	const d = (...args) => {
		clearTimeout(t);
		t = setTimeout(() => fn(...args), ms);
	};
	d.cancel = () => clearTimeout(t);
	return d;
}

/** Runs fn at most once per `ms`, trailing call guaranteed. */
export function throttle(fn, ms) {
	let last = 0;
	let t = null;
	const run = () => {
		last = Date.now();
		t = null;
		fn();
	};
	const f = () => {
		if (t) return;
		const wait = Math.max(0, last + ms - Date.now());
		t = setTimeout(run, wait);
	};
	f.cancel = () => {
		clearTimeout(t);
		t = null;
	};
	return f;
}

export const DASH = '—';

export function toDate(t) {
	if (t == null || t === '') return null;
	const d = t instanceof Date ? t : new Date(t);
	return Number.isNaN(d.getTime()) ? null : d;
}

/** "in 3 h", "5 min ago", "just now". */
export function rel(t, now = Date.now()) {
	const d = toDate(t);
	if (!d) return DASH;
	const diff = d.getTime() - now;
	const a = Math.abs(diff);
	const min = 60e3;
	const hr = 60 * min;
	const day = 24 * hr;
	let txt;
	if (a < 45e3) return 'just now';
	if (a < hr) txt = `${Math.round(a / min)} min`;
	else if (a < 36 * hr) txt = `${Math.round(a / hr)} h`;
	else if (a < 21 * day) txt = `${Math.round(a / day)} d`;
	else if (a < 120 * day) txt = `${Math.round(a / (7 * day))} wk`;
	else txt = `${Math.round(a / (30 * day))} mo`;
	return diff > 0 ? `in ${txt}` : `${txt} ago`;
}

const LOCALE = 'en-GB';
const fmtCache = new Map();
function fmt(opts) {
	const k = JSON.stringify(opts);
	if (!fmtCache.has(k)) fmtCache.set(k, new Intl.DateTimeFormat(LOCALE, opts));
	return fmtCache.get(k);
}

export function dateTime(t) {
	const d = toDate(t);
	if (!d) return DASH;
	return fmt({ weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' }).format(d);
}

export function dateOnly(t) {
	const d = toDate(t);
	if (!d) return DASH;
	return fmt({ day: 'numeric', month: 'short', year: 'numeric' }).format(d);
}

export function timeOnly(t) {
	const d = toDate(t);
	if (!d) return DASH;
	return fmt({ hour: '2-digit', minute: '2-digit' }).format(d);
}

export function dayLabel(t) {
	const d = toDate(t);
	if (!d) return DASH;
	const today = new Date();
	const diff = Math.round((new Date(d.getFullYear(), d.getMonth(), d.getDate()) - new Date(today.getFullYear(), today.getMonth(), today.getDate())) / 86400e3);
	if (diff === 0) return 'Today';
	if (diff === 1) return 'Tomorrow';
	if (diff === -1) return 'Yesterday';
	return fmt({ weekday: 'short', day: 'numeric', month: 'short' }).format(d);
}

/** "26 May – 22 Nov 2026" */
export function dateRange(a, b) {
	const x = toDate(a);
	const y = toDate(b);
	if (!x || !y) return `${dateOnly(a)} – ${dateOnly(b)}`;
	const head = x.getFullYear() === y.getFullYear() ? fmt({ day: 'numeric', month: 'short' }).format(x) : dateOnly(x);
	return `${head} – ${dateOnly(y)}`;
}

/** "Tue 14 Mar, 09:00–11:00" */
export function slot(start, end) {
	const a = toDate(start);
	if (!a) return DASH;
	const b = toDate(end);
	const head = `${dayLabel(a)}, ${timeOnly(a)}`;
	if (!b) return head;
	const sameDay = a.toDateString() === b.toDateString();
	return `${head}–${sameDay ? timeOnly(b) : dateTime(b)}`;
}

/** Compact: "Today 09:00–11:00", "Wed 25 09:00–11:00" */
export function shortSlot(start, end) {
	const a = toDate(start);
	if (!a) return DASH;
	const b = toDate(end);
	let day = dayLabel(a);
	if (!['Today', 'Tomorrow', 'Yesterday'].includes(day)) day = fmt({ weekday: 'short', day: 'numeric' }).format(a);
	return `${day} ${timeOnly(a)}${b ? `–${timeOnly(b)}` : ''}`;
}

/** Local YYYY-MM-DD. */
export function isoDay(d = new Date()) {
	const p = (n) => String(n).padStart(2, '0');
	return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

export function pct(p, digits) {
	if (p == null || Number.isNaN(p)) return DASH;
	const v = p * 100;
	const dg = digits ?? (v !== 0 && Math.abs(v) < 10 ? 1 : 0);
	return `${v.toFixed(dg)} %`;
}

export function num(v, digits = 0) {
	if (v == null || Number.isNaN(v)) return DASH;
	return Number(v).toLocaleString(LOCALE, { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** Duration given in hours, humanised. */
export function hours(v) {
	if (v == null || Number.isNaN(v)) return DASH;
	if (v < 1) return `${Math.round(v * 60)} min`;
	if (v < 48) return `${v.toFixed(v < 10 ? 1 : 0)} h`;
	return `${(v / 24).toFixed(1)} d`;
}

const ACRONYMS = { sd: 'SD', rms: 'RMS', sms: 'SMS', pr: 'PR', auc: 'AUC' };

export function humanize(s) {
	if (!s) return DASH;
	const t = String(s)
		.replace(/_/g, ' ')
		.split(' ')
		.map((w) => ACRONYMS[w] || w)
		.join(' ');
	return t.charAt(0).toUpperCase() + t.slice(1);
}

/** "washer/drum_bearing" → {kind: 'washer', component: 'drum_bearing', label: 'Drum bearing'} */
export function mode(fm) {
	if (!fm) return { kind: '', component: '', label: DASH };
	const i = String(fm).indexOf('/');
	const kind = i >= 0 ? fm.slice(0, i) : '';
	const component = i >= 0 ? fm.slice(i + 1) : fm;
	return { kind, component, label: humanize(component) };
}

/** A top factor may be a sentence or an object; show the best text we have. */
export function factorText(f) {
	if (f == null) return '';
	if (typeof f === 'string') return f;
	if (typeof f !== 'object') return String(f);
	const text = f.text ?? f.description ?? f.explanation ?? f.message ?? f.why;
	if (text) return String(text);
	const name = f.feature ?? f.name ?? f.metric ?? '';
	const val = f.contribution ?? f.value ?? f.weight ?? f.importance;
	return val !== undefined && val !== null ? `${name} (${typeof val === 'number' ? val.toFixed(3) : val})` : String(name);
}

export function qs(params) {
	if (!params) return '';
	const u = new URLSearchParams();
	for (const [k, v] of Object.entries(params)) {
		if (v == null || v === '') continue;
		u.set(k, String(v));
	}
	const str = u.toString();
	return str ? `?${str}` : '';
}

export function sleep(ms, signal) {
	return new Promise((resolve) => {
		const t = setTimeout(resolve, ms);
		signal?.addEventListener('abort', () => {
			clearTimeout(t);
			resolve();
		}, { once: true });
	});
}
