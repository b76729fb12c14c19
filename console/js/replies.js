// Replies: customers' messages waiting for a dispatcher.
import { h, replace, rel, dateTime, humanize } from './util.js';
import { on } from './bus.js';
import { request, seg } from './api.js';
import { empty, segmented, report, toast, modal, field, chip, icon, paged } from './ui.js';

const state = { waiting: 'true' };

export function mount(root, ctx) {
	const shows = [['true', 'Waiting'], ['false', 'Answered'], ['', 'All']].map(([value, label]) => ({ value, label }));
	ctx.header('Replies', '', segmented(shows, state.waiting, (v) => { state.waiting = v; replies.load(); }, 'Show'));
	const list = h('div.reply-list');
	const more = h('div.table-more');
	const view = h('div.replies-view', { 'data-view': 'replies', 'aria-busy': 'true' }, list, more);
	replace(root, view);

	function card(r) {
		const answered = Boolean(r.answered_at);
		const links = [
			r.ticket_id ? h('button.link', { onClick: () => ctx.openTicket(r.ticket_id) }, `Ticket #${r.ticket_id}`) : null,
			r.incident_id ? h('a', { href: '#/incidents' }, `Incident #${r.incident_id}`) : null,
			r.customer ? h('span.muted', `Customer ${r.customer}`) : null,
		].filter(Boolean);
		return h('article', { class: ['panel', 'reply', answered ? 'answered' : ''], 'data-reply-id': r.id },
			h('div.reply-head', h('span.avatar.avatar-sm', /^[a-z]/i.test(r.sender || '') ? r.sender[0].toUpperCase() : icon('reply', 14)),
				h('div.reply-from', h('strong', r.sender || 'Unknown sender'), h('div.muted.small', `${humanize(r.channel)} · `, h('span', { title: dateTime(r.received_at) }, rel(r.received_at)), r.queue ? ' · ' : '', r.queue ? chip(humanize(r.queue), 'chip-muted') : null)),
				h('div.reply-actions', answered
					? h('span.answered-by.muted.small', icon('check', 14), `answered ${rel(r.answered_at)}${r.answered_by ? ` by ${r.answered_by}` : ''}`)
					: h('button.btn.btn-primary.btn-sm', { 'data-action': 'answer', onClick: () => answer(r) }, icon('check', 15), 'Mark answered'),
				),
			),
			r.subject ? h('div.reply-subject', r.subject) : null,
			h('div.reply-body', r.body),
			links.length ? h('div.reply-links.small', links.flatMap((l, i) => (i ? [h('span.sep', '·'), l] : [l]))) : null,
		);
	}

	function answer(r) {
		const note = h('textarea', { rows: 3, placeholder: 'Optional: what was done (called back, rescheduled…)' });
		modal({
			title: `Mark reply from ${r.sender || 'customer'} answered`,
			body: field('Note', note),
			actions: [
				{ label: 'Cancel' },
				{
					label: 'Mark answered',
					kind: 'primary',
					submit: true,
					action: 'confirm-answer',
					onClick: async (close) => {
						try {
							const body = note.value.trim() ? { note: note.value.trim() } : {};
							const updated = await request(`/replies/${seg(r.id)}/answer`, { method: 'POST', body });
							close();
							toast('The reply is off the queue.', 'success', 'Answered');
							const items = replies.items;
							replies.set(state.waiting === 'true' ? items.filter((x) => x.id !== r.id) : items.map((x) => (x.id === r.id ? { ...x, ...(updated || {}), answered_at: updated?.answered_at || new Date().toISOString() } : x)));
						} catch (e) {
							report(e, 'Could not mark it answered');
						}
					},
				},
			],
		});
	}

	const waiting = () => state.waiting === 'true';
	const replies = paged({
		path: '/replies',
		query: () => ({ waiting: state.waiting, limit: 50 }),
		signal: ctx.signal,
		view,
		state: (node) => replace(list, node),
		draw(items, btn) {
			replace(list, items.length ? items.map(card) : h('div.panel', empty(waiting() ? 'Inbox zero' : 'No replies', waiting() ? 'No customer reply is waiting for an answer.' : null)));
			replace(more, btn);
			ctx.setSub(`${items.length}${btn ? '+' : ''} ${waiting() ? 'waiting' : 'shown'}`);
		},
	});
	const off = on('stream:reconnected', replies.load);
	const tick = setInterval(() => replies.load(true), 60_000); // replies have no stream event
	replies.load();
	return () => {
		off();
		clearInterval(tick);
	};
}
